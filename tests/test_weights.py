"""aqakit.media.weights: one resolver (path, file://, http(s):// cached, hf://, #sha256= pins) and one loader,
used by every backbone's ``weights``. No network: a local HTTP server and a prepared Hugging Face cache."""

from __future__ import annotations

import hashlib
import io
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from torch import nn

from aqakit.errors import AqakitError
from aqakit.media.weights import SourceNotFound, load_weights, read_state_dict, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def state_bytes(state: object) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text and text, text
    return text


class Server:
    """A bounded stdlib HTTP server on 127.0.0.1 serving ``files`` (path -> bytes), counting requests."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: Counter[str] = Counter()
        server = self

        class Handler(BaseHTTPRequestHandler):
            timeout = 5

            def do_GET(self) -> None:
                server.requests[self.path] += 1
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def server() -> Iterator[Server]:
    srv = Server()
    try:
        yield srv
    finally:
        srv.close()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private aqakit cache for this test."""
    monkeypatch.setenv("AQAKIT_CACHE", str(tmp_path / "aqakit-cache"))
    return tmp_path / "aqakit-cache"


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Every socket connection attempted to anything but this machine (the Hub, a CDN) is recorded."""
    seen: list[object] = []
    real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
    local = ("127.0.0.1", "::1", "localhost")

    def connect(self: socket.socket, address: object) -> None:
        if not (isinstance(address, tuple) and address[0] in local):
            seen.append(address)
            raise OSError("network disabled in this test")
        return real_connect(self, address)

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> object:
        if host not in local:
            seen.append(host)
            raise socket.gaierror("network disabled in this test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return seen


def hf_cache(root: Path, repo: str, files: dict[str, bytes]) -> Path:
    """The layout huggingface_hub reads: models--OWNER--NAME/refs/main + snapshots/<commit>/<path>."""
    folder = root / f"models--{repo.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text(COMMIT)
    for path, data in files.items():
        target = folder / "snapshots" / COMMIT / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    return folder / "snapshots" / COMMIT


TINY = {"weight": torch.arange(6.0).reshape(2, 3), "bias": torch.tensor([1.0, -1.0])}


# ---- https:// (served over plain http on 127.0.0.1): downloaded once, cached, pinned


def test_a_url_is_downloaded_once_into_the_cache_and_checked(server, cache, capsys):
    data = state_bytes(TINY)
    server.files["/w/tiny.pt"] = data
    source = f"{server.url}/w/tiny.pt#sha256={sha(data)}"
    first = resolve(source)
    assert server.requests["/w/tiny.pt"] == 1
    assert first.is_file() and first.name == "tiny.pt" and (cache / "weights") in first.parents
    assert first.read_bytes() == data
    assert "downloading" in capsys.readouterr().err
    assert resolve(source) == first and resolve(source.split("#")[0]) == first  # cached: no request
    assert server.requests["/w/tiny.pt"] == 1
    assert not [p for p in first.parent.iterdir() if p != first]  # no temp file left beside it
    layer = nn.Linear(3, 2)
    report = load_weights(layer, source, name="tiny")
    assert report.loaded == ["bias", "weight"] and torch.equal(layer.weight, TINY["weight"])
    assert f"tiny weights {server.url}/w/tiny.pt: loaded 2 tensors" in capsys.readouterr().err
    assert server.requests["/w/tiny.pt"] == 1


def test_a_tampered_download_is_refused_and_not_kept(server, cache):
    data = state_bytes(TINY)
    server.files["/w/tiny.pt"] = data + b"tampered"
    with pytest.raises(AqakitError) as exc:
        resolve(f"{server.url}/w/tiny.pt#sha256={sha(data)}")
    assert "checksum mismatch" in one_line(exc) and "/w/tiny.pt" in str(exc.value)
    assert not [p for p in cache.rglob("*") if p.is_file()]
    server.files["/w/tiny.pt"] = data  # the right file: now it is fetched and kept
    assert resolve(f"{server.url}/w/tiny.pt#sha256={sha(data)}").read_bytes() == data
    assert server.requests["/w/tiny.pt"] == 2


def test_http_errors_and_unreachable_hosts_are_one_line(server, cache):
    with pytest.raises(SourceNotFound) as exc:
        resolve(f"{server.url}/missing.pt")
    assert "HTTP 404" in one_line(exc) and "missing.pt" in str(exc.value)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(AqakitError) as exc:
        resolve(f"http://127.0.0.1:{port}/w.pt")
    assert "cannot reach 127.0.0.1" in one_line(exc) and "local path" in str(exc.value)
    assert not [p for p in cache.rglob("*") if p.is_file()]


# ---- hf:// through huggingface_hub, offline from a prepared cache


@pytest.mark.parametrize("variable", ["HF_HUB_CACHE", "HF_HOME"])
def test_hf_sources_resolve_offline_from_the_local_cache(tmp_path, monkeypatch, connections, variable):
    data = state_bytes(TINY)
    root = tmp_path / "hf" / ("hub" if variable == "HF_HOME" else "")
    snapshot = hf_cache(root, "owner/repo", {"sub/tiny.pt": data})
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "hf"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert resolve("hf://owner/repo/sub/tiny.pt") == snapshot / "sub" / "tiny.pt"
    assert resolve(f"hf://owner/repo/sub/tiny.pt@{COMMIT}#sha256={sha(data)}") == snapshot / "sub" / "tiny.pt"
    assert torch.equal(read_state_dict("hf://owner/repo/sub/tiny.pt", "tiny")["bias"], TINY["bias"])
    with pytest.raises(SourceNotFound) as exc:
        resolve("hf://owner/repo/sub/other.pt")
    assert "not in the local Hugging Face cache and HF_HUB_OFFLINE is set" in one_line(exc)
    with pytest.raises(AqakitError) as exc:
        resolve(f"hf://owner/repo/sub/tiny.pt#sha256={'0' * 64}")
    assert "checksum mismatch" in one_line(exc)
    assert not connections


def test_a_pinned_cached_hf_file_needs_no_request_online(tmp_path, monkeypatch, connections):
    data = state_bytes(TINY)
    snapshot = hf_cache(tmp_path / "hub", "owner/repo", {"tiny.pt": data})
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve(f"hf://owner/repo/tiny.pt#sha256={sha(data)}") == snapshot / "tiny.pt"
    assert not connections


@pytest.mark.parametrize("source", ["hf://owner/repo", "hf://owner//x.pt", "hf://owner/repo/x.pt@"])
def test_malformed_hf_sources_say_how_to_write_them(source):
    with pytest.raises(AqakitError) as exc:
        resolve(source)
    assert "hf://OWNER/REPO/PATH/IN/REPO[@REVISION]" in one_line(exc)


# ---- local files: paths, ~, file://, pins


def test_local_paths_file_urls_and_home(tmp_path, monkeypatch):
    data = state_bytes(TINY)
    (tmp_path / "w.pt").write_bytes(data)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve(str(tmp_path / "w.pt")) == tmp_path / "w.pt"
    assert resolve((tmp_path / "w.pt").as_uri()) == tmp_path / "w.pt"
    assert resolve("~/w.pt") == tmp_path / "w.pt"
    assert resolve(f"~/w.pt#sha256={sha(data).upper()}") == tmp_path / "w.pt"
    with pytest.raises(AqakitError) as exc:
        resolve(f"~/w.pt#sha256={sha(b'other')}")
    assert "checksum mismatch" in one_line(exc) and "~/w.pt" in str(exc.value)
    with pytest.raises(AqakitError) as exc:
        resolve("~/w.pt#sha256=abc")
    assert "64 hex digits" in one_line(exc)
    with pytest.raises(SourceNotFound) as exc:
        resolve("~/nope.pt")
    assert "not found" in one_line(exc) and str(tmp_path / "nope.pt") in str(exc.value)
    with pytest.raises(SourceNotFound, match="is a folder"):
        resolve(str(tmp_path))


def test_not_a_state_dict_no_match_and_shape_mismatch_are_one_line(tmp_path):
    layer = nn.Linear(3, 2)
    (tmp_path / "junk.pt").write_text("not a checkpoint")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    torch.save({"other.weight": torch.zeros(1)}, tmp_path / "other.pt")
    torch.save({"weight": torch.zeros(4, 3)}, tmp_path / "wide.pt")
    cases = {"junk.pt": "junk.pt is not a loadable state dict", "list.pt": "holds no state dict of tensors",
             "other.pt": "no key of other.pt matches", "wide.pt": "key 'weight' has shape (4, 3)"}
    for file, message in cases.items():
        with pytest.raises(AqakitError) as exc:
            load_weights(layer, str(tmp_path / file), name="tiny")
        assert message in one_line(exc) and one_line(exc).startswith("tiny: ")


def test_safetensors_are_recognised_by_content(tmp_path):
    from safetensors.torch import save_file

    save_file(TINY, str(tmp_path / "tiny.bin"))  # no .safetensors suffix (e.g. a URL's file name)
    assert torch.equal(read_state_dict(tmp_path / "tiny.bin", "tiny")["weight"], TINY["weight"])


# ---- backbones


def test_c3d_weights_from_a_url_report_as_before(server, cache, capsys):
    from aqakit_c3d import C3D

    model = C3D(width=0.125, clip_len=4, frame_size=32)
    state = {k: torch.randn_like(v) for k, v in model.convs.state_dict().items()}
    state["fc6.weight"] = torch.zeros(2, 2)
    data = state_bytes(state)
    server.files["/c3d.pickle"] = data
    loaded = C3D(width=0.125, clip_len=4, frame_size=32, weights=f"{server.url}/c3d.pickle#sha256={sha(data)}")
    err = capsys.readouterr().err
    assert f"c3d weights {server.url}/c3d.pickle: loaded 16 tensors; skipped 1: fc6.weight (not in this backbone)" in err
    assert torch.equal(loaded.convs["conv3b"].weight, state["conv3b.weight"])
    assert loaded.weights_report.unexpected == ["fc6.weight"] and not loaded.weights_report.missing


# MSCADC: the authors' C3D_dilated_body (MTL-AQA release, models/MSCADC/body.py) as their
# C3D_small_PyTorch_Trained_12.pth stores it: layer -> (out, in) channels, convs 3x3x3 (docs/models.md).
RELEASE = {"1": (32, 3), "2": (64, 32), "3a": (128, 64), "3b": (128, 128), "4a": (256, 128), "4b": (256, 256),
           "5a": (256, 256), "5b": (256, 256)}


def release_state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    state: dict[str, torch.Tensor] = {}
    for stage, (out, inp) in RELEASE.items():
        state[f"conv{stage}.weight"] = torch.randn(out, inp, 3, 3, 3, generator=g) * 0.05
        state[f"conv{stage}.bias"] = torch.randn(out, generator=g) * 0.05
        state[f"bn{stage}.weight"] = 1 + 0.1 * torch.randn(out, generator=g)
        state[f"bn{stage}.bias"] = 0.1 * torch.randn(out, generator=g)
        state[f"bn{stage}.running_mean"] = 0.1 * torch.randn(out, generator=g)
        state[f"bn{stage}.running_var"] = 1 + torch.rand(out, generator=g)
        state[f"bn{stage}.num_batches_tracked"] = torch.tensor(1000)
    state["fc6.weight"] = torch.zeros(4, 4)  # a layer of the full network that the body does not have
    return state


def test_mscadc_loads_the_authors_release_layout(tmp_path, capsys):
    from aqakit_mscadc.backbone import MSCADC

    state = release_state()
    torch.save(state, tmp_path / "C3D_small_PyTorch_Trained_12.pth")
    model = MSCADC(frame_size=24, frames=4, weights=str(tmp_path / "C3D_small_PyTorch_Trained_12.pth")).eval()
    report = model.weights_report
    assert len(report.loaded) == 56 and report.unexpected == ["fc6.weight"] and not report.missing
    assert "mscadc weights C3D_small_PyTorch_Trained_12.pth: loaded 56 tensors" in capsys.readouterr().err
    conv, bn = model.convs["conv4a"][0], model.convs["conv4a"][1]
    assert torch.equal(conv.weight, state["conv4a.weight"]) and torch.equal(bn.running_var, state["bn4a.running_var"])
    # the body as the release computes it (conv -> bn (eval) -> relu), on one layer
    x = torch.randn(1, 128, 2, 6, 6)
    ref = torch.relu(torch.nn.functional.batch_norm(
        torch.nn.functional.conv3d(x, state["conv4a.weight"], state["conv4a.bias"], padding=1),
        state["bn4a.running_mean"], state["bn4a.running_var"], state["bn4a.weight"], state["bn4a.bias"]))
    with torch.no_grad():
        torch.testing.assert_close(model.convs["conv4a"](x), ref)
    with pytest.raises(AqakitError) as exc:
        MSCADC(width=0.5, weights=str(tmp_path / "C3D_small_PyTorch_Trained_12.pth"))
    assert "key 'convs.conv1.0.weight' has shape (32, 3, 3, 3, 3)" in one_line(exc)


def test_tsn_pretrained_comes_from_the_local_hub_cache_offline(tmp_path, monkeypatch, connections, capsys):
    import timm
    from aqakit_modern.frame_nets import TSN
    from safetensors.torch import save_file

    raw = timm.create_model("resnet10t", pretrained=False, num_classes=1000)
    snapshot = hf_cache(tmp_path / "hub", "timm/resnet10t.c3_in1k", {})
    snapshot.mkdir(parents=True)
    save_file(raw.state_dict(), str(snapshot / "model.safetensors"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = TSN(model="resnet10t", clip_len=2, frame_size=32, pretrained=True)
    assert torch.equal(model.net.conv1[0].weight, raw.conv1[0].weight)
    assert model.weights_report.head == ["fc.bias", "fc.weight"] and not model.weights_report.missing
    assert "tsn (resnet10t) weights hf://timm/resnet10t.c3_in1k/model.safetensors: loaded" in capsys.readouterr().err
    with pytest.raises(SourceNotFound) as exc:  # no copy of resnet18's weights in this cache
        TSN(model="resnet18", clip_len=2, frame_size=32, pretrained=True)
    assert "hf://timm/resnet18.a1_in1k/model.safetensors: not in the local Hugging Face cache" in one_line(exc)
    assert not connections


def test_tsn_pretrained_refusals_are_one_line():
    from aqakit_modern.frame_nets import TSN

    with pytest.raises(AqakitError) as exc:
        TSN(model="botnet50ts_256", pretrained=True)
    assert "timm has no Hugging Face Hub weights for 'botnet50ts_256'" in one_line(exc)
    with pytest.raises(AqakitError) as exc:
        TSN(model="resnet10t", pretrained=True, weights="w.pt")
    assert "not both" in one_line(exc)


def test_the_old_import_path_is_the_core_loader():
    import aqakit_modern.weights as old

    assert old.load_weights is load_weights and old.read_state_dict is read_state_dict
