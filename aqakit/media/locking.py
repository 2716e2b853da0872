"""Exclusive locks on the folders aqakit writes, and file modes that follow the user's umask.

A lock is ``fcntl.flock`` on a small lock file that names its holder (pid, host, command). The kernel
drops the lock when the holder's last file descriptor closes, so a killed holder (even ``kill -9``)
never leaves a lock behind: a lock file that is present but not held is taken over as it is. Without
``fcntl`` (not POSIX) locks are no-ops.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import socket
import sys
import time
from pathlib import Path

from aqakit.errors import AqakitError

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".aqakit.lock"  # the lock file inside a run folder


class FolderLock:
    """A held lock; ``release()`` (or leaving the ``with`` block) removes the lock file and unlocks."""

    def __init__(self, path: Path, fd: int | None) -> None:
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            if _same_file(self.fd, self.path):  # unlink while held: waiters re-check the path (see acquire)
                self.path.unlink(missing_ok=True)
        finally:
            os.close(self.fd)  # closing the last descriptor unlocks
            self.fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire(path: Path, busy: str, wait: bool = False) -> FolderLock:
    """Lock the lock file ``path`` (created if missing). If another process holds it, ``busy`` with
    ``{holder}`` replaced (e.g. ``aqakit pid 1234 (aqakit train r.yaml)``) is raised as an AqakitError,
    or with ``wait`` printed as one notice before blocking until the lock is free."""
    path = Path(path)
    if fcntl is None:  # pragma: no cover
        return FolderLock(path, None)
    while True:
        fd = _open(path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                message = busy.replace("{holder}", describe_holder(fd))
                if not wait:
                    raise AqakitError(message) from None
                print(f"aqakit: {message}; waiting for it", file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _same_file(fd, path):  # else the holder removed this file while we waited: lock the new one
            _write_holder(fd)
            return FolderLock(path, fd)
        os.close(fd)


def _open(path: Path) -> int:
    """Open (create) the lock file; an unwritable folder raises OSError naming it, as any failed write."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    except FileNotFoundError:  # the folder is not there (yet, or any more)
        path.parent.mkdir(parents=True, exist_ok=True)
        return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _command() -> str:
    argv = list(sys.argv) or ["python"]
    prog = Path(argv[0]).name
    prog = "aqakit" if prog in ("aqakit", "__main__.py") else prog
    text = shlex.join([prog, *argv[1:]])
    return text if len(text) <= 200 else text[:197] + "..."


def _write_holder(fd: int) -> None:
    record = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "command": _command()}) + "\n"
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode("utf-8"), 0)


def describe_holder(fd: int) -> str:
    """Who holds the lock file open as ``fd``, from what the holder wrote into it."""
    record: dict = {}
    for _ in range(20):  # the holder writes its record right after locking: give it a moment
        try:
            record = json.loads(os.pread(fd, 4096, 0).decode("utf-8") or "{}")
        except (ValueError, OSError):
            record = {}
        if record.get("pid"):
            break
        time.sleep(0.05)
    if not record.get("pid"):
        return "another process"
    text = f"aqakit pid {record['pid']}"
    host = record.get("host")
    if host and host != socket.gethostname():
        text += f" on {host}"
    elif not _alive(int(record["pid"])):
        text += " (exited; a process it started still holds the lock)"
    return text + (f" ({record['command']})" if record.get("command") else "")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


# -- file modes --------------------------------------------------------------------------------------

_UMASK = re.compile(r"^Umask:\s*([0-7]+)\s*$", re.MULTILINE)


def umask() -> int:
    """The process umask, read without changing it (``/proc/self/status``; elsewhere from a probe folder)."""
    try:
        found = _UMASK.search(Path("/proc/self/status").read_text())
        if found:
            return int(found.group(1), 8)
    except OSError:
        pass
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # a folder made with 0o777 shows which bits the umask clears
        probe = Path(tmp) / "probe"
        probe.mkdir(mode=0o777)
        return 0o777 & ~probe.stat().st_mode


def file_mode() -> int:
    """The mode a plain new file gets: ``0o666 & ~umask``."""
    return 0o666 & ~umask()


def folder_mode() -> int:
    """The mode a plain new folder gets: ``0o777 & ~umask``."""
    return 0o777 & ~umask()
