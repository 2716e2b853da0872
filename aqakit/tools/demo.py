"""``aqakit demo SOURCE``: a local web page that scores an uploaded video (docs/demo.md).

Standard library only (``http.server``): one page (HTML + a little JavaScript), and ``POST /predict``, which
takes the video as the raw request body (no multipart parsing), streams it into a private temporary folder
(removed at exit), runs ``aqakit.load(SOURCE).predict`` on it and answers JSON: the result exactly as
``aqakit predict --json`` prints it, and the HTML the page shows (score, action code, commentary, a strip of
frames, execution x difficulty for DD-aware heads). A bad upload is a one-line message, never a traceback.
"""

from __future__ import annotations

import errno
import html
import itertools
import os
import signal
import socket
import sys
import tempfile
import threading
import webbrowser
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qs, urlsplit

from aqakit.media import video
from aqakit.media.checkpoint import to_json
from aqakit.errors import AqakitError
from aqakit.tools.predict import resample
from aqakit.engine.report import frame_strip

DEFAULT_PORT = 7860
MAX_UPLOAD_MB = 500
STRIP_FRAMES = 6
STRIP_HEIGHT = 96
CHUNK = 1 << 20
META_KEYS = ("input", "frames", "fps", "seconds")


@dataclass
class Demo:
    """What the server needs: the model, where uploads go, the upload limit."""

    model: Any  # aqakit.api.Model
    uploads: Path
    max_bytes: int
    title: str = "aqakit demo"
    lock: threading.Lock = field(default_factory=threading.Lock)
    numbers: Iterator[int] = field(default_factory=itertools.count)

    @property
    def wants_difficulty(self) -> bool:
        """True when a head scores with the degree of difficulty (DD-aware heads describe the execution)."""
        return any("difficulty" in head.requires for head in self.model.module.heads.values())

    def page(self) -> str:
        """The HTML page: upload form, optional window and difficulty, the result area."""
        heads = ", ".join(f"{head_id} ({cfg.name})" for head_id, cfg in self.model.recipe.model.heads.items())
        about = (f"model <b>{html.escape(self.model.recipe.name)}</b> &middot; heads {html.escape(heads)} &middot; "
                 f"window resampled to {self.model.frames} frames")
        dd = DD_FIELD if self.wants_difficulty else ""
        return (PAGE.replace("__TITLE__", html.escape(self.title)).replace("__ABOUT__", about)
                .replace("__DD__", dd).replace("__MAX_BYTES__", str(self.max_bytes))
                .replace("__MAX_MB__", f"{self.max_bytes / 1e6:g}"))

    def score(self, body: BinaryIO, length: int | None, query: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Save the uploaded video, predict, and return (HTTP status, JSON answer)."""
        name = Path(query.get("name") or "upload").name or "upload"
        if length is None:
            return 411, {"error": "the upload has no Content-Length; send the video as the request body"}
        if length > self.max_bytes:
            return 413, {"error": f"{name}: {length / 1e6:.0f} MB is over the demo's limit of "
                                  f"{self.max_bytes / 1e6:g} MB (aqakit demo --max-upload-mb)"}
        path = self.uploads / f"upload-{next(self.numbers)}{Path(name).suffix.lower()}"
        try:
            result, strip, difficulty = self._predict(body, length, path, name, query)
        except AqakitError as exc:
            message = str(exc).replace(str(path), name).replace("--start", "start").replace("--end", "end")
            return 400, {"error": message}
        finally:
            path.unlink(missing_ok=True)
        result["input"] = name
        return 200, {"result": result, "html": render_result(result, strip, difficulty)}

    def _predict(self, body: BinaryIO, length: int, path: Path, name: str,
                 query: dict[str, str]) -> tuple[dict[str, Any], str, float | None]:
        """Save the upload to ``path`` and score it: (result, frame strip, difficulty typed on the page)."""
        if _save(body, length, path) == 0:  # read the whole body first: the answer must reach the browser
            raise AqakitError(f"{name}: the upload is empty; choose a video file")
        difficulty = parse_difficulty(query.get("difficulty", ""))
        if path.suffix not in video.VIDEO_SUFFIXES:
            raise AqakitError(f"{name}: not a video file ({' '.join(video.VIDEO_SUFFIXES)}); choose a video")
        with self.lock:  # one prediction at a time: the model and the CPU are shared
            result = self.model.predict(path, query.get("start") or None, query.get("end") or None)
            return result, strip_png(path, result["frames"]), difficulty


def _save(body: BinaryIO, length: int, path: Path) -> int:
    """Copy ``length`` bytes of ``body`` to ``path``; return how many arrived."""
    received = 0
    with open(path, "wb") as out:
        while received < length:
            chunk = body.read(min(CHUNK, length - received))
            if not chunk:
                break
            out.write(chunk)
            received += len(chunk)
    if received < length:
        raise AqakitError(f"the upload stopped after {received} of {length} bytes; try again")
    return received


def parse_difficulty(text: str) -> float | None:
    """The degree of difficulty typed on the page: a number > 0, or None when empty."""
    if not text.strip():
        return None
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0 or value == float("inf"):
        raise AqakitError(f"difficulty {text!r} is not a number > 0 (e.g. 3.2), or leave it empty")
    return value


def strip_png(path: Path, frames: list[int], count: int = STRIP_FRAMES) -> str:
    """A base64 PNG row of ``count`` frames spread over the assessed window (first..last, from 1)."""
    clip = video.read_frames(path, [i - 1 for i in resample(frames[0], frames[1], count)])
    height, width = clip.shape[-2:]
    size = (STRIP_HEIGHT, max(1, round(width * STRIP_HEIGHT / height)))
    return frame_strip(video.resize(clip, size), count)


def render_result(result: dict[str, Any], strip: str | None = None, difficulty: float | None = None) -> str:
    """The result as HTML: one block per head, values tagged ``data-key`` (head[.field[.part]])."""
    esc = html.escape
    first, last = result["frames"]
    fps = f", {result['fps']:.3g} fps" if result.get("fps") else ""
    meta = (f"<p class='meta'><b data-key='input'>{esc(str(result['input']))}</b>: frames "
            f"<span data-key='frames'>{first}..{last}</span>{fps}, {result['seconds']['total']:.2f} s</p>")
    parts = [meta]
    if strip:
        parts.append(f"<img class='strip' alt='frames of the assessed window' src='data:image/png;base64,{strip}'>")
    for key, value in result.items():
        if key not in META_KEYS:
            parts.append(f"<div class='head'><h3>{esc(key)}</h3>{_render_value(key, value, difficulty)}</div>")
    parts.append(f"<details><summary>JSON (as aqakit predict --json)</summary><pre>{esc(to_json(result))}</pre>"
                 "</details>")
    return "\n".join(parts)


def _number(key: str, value: float, css: str = "number") -> str:
    return f"<span class='{css}' data-key='{html.escape(key)}'>{value:.2f}</span>"


def _render_value(key: str, value: Any, difficulty: float | None) -> str:
    """One head's value: a score, execution (x difficulty), classes with probabilities, or text."""
    esc = html.escape
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return _number(key, value, "score")
    if isinstance(value, str):
        text = esc(value) if value.strip() else "<i>(no words generated)</i>"
        return f"<blockquote data-key='{esc(key)}'>{text}</blockquote>"
    if isinstance(value, dict) and isinstance(value.get("execution"), (int, float)):
        return _render_execution(key, value, difficulty)
    if isinstance(value, dict) and value and all(isinstance(v, dict) and "class" in v for v in value.values()):
        rows = "".join(
            f"<tr><td>{esc(f)}</td><td data-key='{esc(key)}.{esc(f)}.class'>{esc(str(v['class']))}</td>"
            f"<td>{_number(f'{key}.{f}.prob', v['prob']) if isinstance(v.get('prob'), (int, float)) else ''}</td></tr>"
            for f, v in value.items())
        return f"<table><tr><th>field</th><th>class</th><th>probability</th></tr>{rows}</table>"
    return f"<pre data-key='{esc(key)}'>{esc(to_json(value))}</pre>"


def _render_execution(key: str, value: dict[str, Any], difficulty: float | None) -> str:
    """Execution, the judges' marks when given, and score = execution x difficulty once DD is known."""
    execution = float(value["execution"])
    out = f"<p>execution {_number(f'{key}.execution', execution, 'score')}"
    if difficulty is None:
        out += " &times; difficulty = score: <i>enter the degree of difficulty to see the score</i></p>"
    else:
        out += (f" &times; difficulty <span data-key='{html.escape(key)}.difficulty'>{difficulty:g}</span> = score "
                f"{_number(f'{key}.score', execution * difficulty, 'score')}</p>")
    if isinstance(value.get("judges"), list):
        marks = " ".join(f"{m:g}" for m in value["judges"])
        out += f"<p>judges' marks (sorted) <span data-key='{html.escape(key)}.judges'>{html.escape(marks)}</span></p>"
    rest = {k: v for k, v in value.items() if k not in ("execution", "judges")}
    if rest:
        out += f"<pre>{html.escape(to_json(rest))}</pre>"
    return out


class Handler(BaseHTTPRequestHandler):
    """``GET /``: the page; ``POST /predict?name=&start=&end=&difficulty=`` with the video as the body."""

    server: DemoServer
    server_version = "aqakit-demo"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, self.server.demo.page().encode(), "text/html; charset=utf-8")
        elif path == "/favicon.ico":
            self._send(204, b"", "image/x-icon")
        else:
            self._send(404, b"not found", "text/plain; charset=utf-8")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        if url.path != "/predict":
            self._send(404, b"not found", "text/plain; charset=utf-8")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = self.headers.get("Content-Length")
        try:
            size = int(length) if length is not None else None
        except ValueError:
            size = None
        try:
            status, answer = self.server.demo.score(self.rfile, size, query)
        except Exception as exc:  # noqa: BLE001 - a bug, not the user's mistake: one line here and on the page
            print(f"aqakit demo: error while scoring {query.get('name')!r}: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)
            status, answer = 500, {"error": f"could not score this video ({type(exc).__name__}: {exc}); "
                                            "the terminal running aqakit demo has the details"}
        self._send(status, to_json(answer).encode(), "application/json")

    def _send(self, status: int, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: no line per request on the terminal."""


class DemoServer(ThreadingHTTPServer):
    """A threading HTTP server that carries the :class:`Demo`."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], demo: Demo) -> None:
        self.demo = demo
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, Handler)


def make_server(demo: Demo, host: str = "127.0.0.1", port: int = DEFAULT_PORT) -> DemoServer:
    """Bind the server, or raise a one-line AqakitError (port in use, unknown host)."""
    try:
        return DemoServer((host, port), demo)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno in errno.errorcode else str(exc)
        if exc.errno == errno.EADDRINUSE:
            raise AqakitError(f"port {port} on {host} is in use: choose another --port (0 picks a free one)") from None
        raise AqakitError(f"cannot listen on --host {host} --port {port} ({reason})") from None


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM stops the server as Ctrl-C does, so the upload folder is removed either way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def serve(source: str, host: str = "127.0.0.1", port: int = DEFAULT_PORT, open_browser: bool = True,
          max_upload_mb: float = MAX_UPLOAD_MB, say: Callable[[str], None] = print) -> None:
    """Load ``source`` and serve the demo page until Ctrl-C or SIGTERM; uploads live in a temp folder."""
    import aqakit

    if not max_upload_mb > 0:
        raise AqakitError(f"--max-upload-mb {max_upload_mb} must be > 0")
    model = aqakit.load(source)
    model.frames  # noqa: B018 - fail now, not on the first upload, when the window is unknown
    with tempfile.TemporaryDirectory(prefix="aqakit-demo-") as uploads:
        demo = Demo(model, Path(uploads), int(max_upload_mb * 1e6), title=f"aqakit demo: {Path(str(source)).name}")
        server = make_server(demo, host, port)
        shown = f"[{host}]" if ":" in host else host
        url = f"http://{shown}:{server.server_address[1]}/"
        try:
            with _stop_on_sigterm():  # before the address is printed: from then on SIGTERM stops cleanly
                if host not in ("127.0.0.1", "localhost", "::1"):
                    print(f"aqakit: warning: --host {host} makes the demo reachable from other machines; it has no "
                          "login", file=sys.stderr, flush=True)
                say(f"aqakit demo: {url}  (uploads go to {uploads}, removed at exit; Ctrl-C stops)")
                if open_browser:
                    webbrowser.open(url)
                server.serve_forever()
        except KeyboardInterrupt:
            say("aqakit demo: stopped")
        finally:
            server.server_close()


DD_FIELD = """<label>difficulty (DD) <input id="difficulty" name="difficulty" inputmode="decimal" size="6"
  placeholder="e.g. 3.2" title="the declared degree of difficulty: score = execution x DD"></label>"""

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>__TITLE__</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font-family:system-ui,sans-serif;max-width:980px;margin:1.5em auto;padding:0 1em;color:#222}
h1{font-size:1.4em;margin-bottom:.2em} .about{color:#555;font-size:.9em;margin-top:0}
form{background:#f4f6f8;border:1px solid #dde;border-radius:8px;padding:1em;display:grid;gap:.7em}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:center} input[type=text],input:not([type]){padding:.3em}
video{max-width:100%;max-height:320px;background:#000;display:none} video.shown{display:block}
button{padding:.45em 1.2em;font-size:1em;cursor:pointer} #status{color:#555}
#error{color:#a40000;font-weight:600;margin:.8em 0} #error:empty{display:none}
.head{border-top:1px solid #ddd;padding:.4em 0} .head h3{margin:.2em 0;font-size:1em;color:#345}
.score{font-size:1.8em;font-weight:700;color:#0b5394} .meta{color:#444}
.strip{max-width:100%;border:1px solid #ccc;margin:.4em 0}
blockquote{margin:.3em 0;padding:.4em .8em;border-left:4px solid #9ab;background:#f7f9fb;font-style:italic}
table{border-collapse:collapse} td,th{border:1px solid #ccc;padding:3px 8px;font-size:.95em;text-align:left}
pre{background:#f4f4f4;padding:.5em;overflow:auto;font-size:.85em}
</style></head><body>
<h1>__TITLE__</h1>
<p class="about">__ABOUT__</p>
<form id="form">
  <div class="row"><label>video <input id="video" type="file" accept="video/*,.mp4,.mov,.avi,.webm,.mkv,.m4v">
  </label><span class="about">up to __MAX_MB__ MB; stays on this computer</span></div>
  <video id="preview" controls muted playsinline></video>
  <div class="row">
    <label>start <input id="start" size="11" placeholder="frame or 4.5s"></label>
    <button type="button" id="mark-start" title="the preview's current time">mark start</button>
    <label>end <input id="end" size="11" placeholder="frame or 9.0s"></label>
    <button type="button" id="mark-end">mark end</button>
    __DD__
  </div>
  <div class="row"><button type="submit" id="submit">Score</button><span id="status"></span></div>
</form>
<p id="error" role="alert"></p>
<section id="result" data-state="empty"></section>
<script>
const MAX_BYTES = __MAX_BYTES__;
const $ = (id) => document.getElementById(id);
const preview = $("preview");
$("video").addEventListener("change", () => {
  const file = $("video").files[0];
  if (preview.src) URL.revokeObjectURL(preview.src);
  if (file) { preview.src = URL.createObjectURL(file); preview.classList.add("shown"); }
});
const mark = (id) => () => { if (preview.src) $(id).value = preview.currentTime.toFixed(2) + "s"; };
$("mark-start").addEventListener("click", mark("start"));
$("mark-end").addEventListener("click", mark("end"));
function fail(message) {
  $("error").textContent = message;
  $("result").dataset.state = "error";
}
$("form").addEventListener("submit", async (event) => {
  event.preventDefault();
  $("error").textContent = "";
  $("result").innerHTML = "";
  const file = $("video").files[0];
  if (!file) return fail("choose a video file first");
  if (file.size > MAX_BYTES) return fail(file.name + ": " + Math.round(file.size / 1e6) +
      " MB is over the demo's limit of " + MAX_BYTES / 1e6 + " MB (aqakit demo --max-upload-mb)");
  const dd = $("difficulty");
  const query = new URLSearchParams({name: file.name, start: $("start").value.trim(),
                                     end: $("end").value.trim(), difficulty: dd ? dd.value.trim() : ""});
  $("submit").disabled = true;
  $("status").textContent = "scoring " + file.name + " ...";
  $("result").dataset.state = "busy";
  try {
    const response = await fetch("/predict?" + query, {method: "POST", body: file,
                                  headers: {"Content-Type": "application/octet-stream"}});
    let answer;
    try { answer = await response.json(); } catch (e) { answer = {error: "the demo answered " + response.status}; }
    if (answer.error) return fail(answer.error);
    $("result").innerHTML = answer.html;
    $("result").dataset.state = "done";
  } catch (e) {
    fail("the demo server did not answer (is aqakit demo still running?)");
  } finally {
    $("submit").disabled = false;
    $("status").textContent = "";
  }
});
</script>
</body></html>
"""
