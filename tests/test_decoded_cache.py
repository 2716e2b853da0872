"""The decoded-frame cache (``data.decoded_cache``: memory or disk) and GPU decoding with torchcodec
(``data.decode_device: cuda``): cached windows equal decoded ones, hits, a changed file or a corrupt entry
decoded again, the LRU bounds, trimming that spares foreign files and only warns on errors, the cache folder
made absolute, a vanished frame file, loader workers, a cached training run, recipe validation, the GPU
error paths."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TOY_RECIPE, needs_toy

from aqakit.engine.data import make_loader, recipe_decoding
from aqakit.engine.distributed import DistInfo
from aqakit.errors import AqakitError, RecipeError
from aqakit.media import video
from aqakit.media.video import Decoding
from aqakit.recipe import load_recipe

WINDOW = [3, 1, 1, 7]  # any order, repeats allowed


@pytest.fixture(autouse=True)
def plain_decoding():
    """Every test starts and ends with the default decoding (no cache, on the CPU)."""
    video.configure_decoding(Decoding())
    yield
    video.configure_decoding(Decoding())


@pytest.fixture(scope="module")
def clip() -> torch.Tensor:
    return torch.randint(0, 256, (3, 10, 16, 18), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def sources(tmp_path_factory, clip) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("decoded")
    video.write_frames(root / "frames", clip)
    return {"mp4": video.write_video(root / "clip.mp4", clip), "folder": root / "frames"}


def entries(folder: Path) -> list[Path]:
    return sorted(folder.glob("??/*.npy"))


@pytest.mark.parametrize("source", ["mp4", "folder"])
@pytest.mark.parametrize("mode", ["memory", "disk"])
def test_cached_windows_equal_uncached_decoding_and_the_second_read_is_a_hit(sources, tmp_path, mode, source):
    path = sources[source]
    uncached = video.read_frames(path, WINDOW)
    video.configure_decoding(Decoding(cache=mode, cache_dir=str(tmp_path)))
    first = video.read_frames(path, WINDOW)
    assert video.decoded_cache_stats()["misses"] == 1 and video.decoded_cache_stats()["hits"] == 0
    decoded = video.decoded_frames()
    second = video.read_frames(path, WINDOW)
    assert video.decoded_cache_stats()["hits"] == 1 and video.decoded_frames() == decoded  # nothing decoded
    for got in (first, second):
        assert got.dtype == torch.uint8 and got.shape == uncached.shape == (3, 4, 16, 18)
        assert torch.equal(got, uncached)
    second.zero_()  # the caller's copy: the cache keeps its own
    assert torch.equal(video.read_frames(path, WINDOW), uncached)
    assert len(entries(tmp_path)) == (mode == "disk")
    video.read_frames(path, [3, 1, 1, 8])  # a jittered window is another entry
    assert video.decoded_cache_stats()["misses"] == 2


def test_a_changed_video_is_decoded_again(tmp_path):
    a, b = (torch.full((3, 4, 16, 16), v, dtype=torch.uint8) for v in (40, 200))
    path = video.write_video(tmp_path / "v.mp4", a)
    video.configure_decoding(Decoding(cache="disk", cache_dir=str(tmp_path / "cache")))
    before = video.read_frames(path, [0, 1])
    video.write_video(path, b)
    os.utime(path, ns=(1, path.stat().st_mtime_ns + 10**9))  # a new mtime even on a coarse clock
    after = video.read_frames(path, [0, 1])
    assert video.decoded_cache_stats()["misses"] == 2 and not torch.equal(before, after)
    assert abs(float(after.float().mean()) - 200) < 3


@pytest.mark.parametrize("damage", ["truncated", "not npy", "wrong dtype", "wrong shape"])
def test_a_corrupt_disk_entry_is_ignored_and_rewritten(sources, tmp_path, damage):
    path = sources["mp4"]
    uncached = video.read_frames(path, WINDOW)
    video.configure_decoding(Decoding(cache="disk", cache_dir=str(tmp_path)))
    video.read_frames(path, WINDOW)
    [entry] = entries(tmp_path)
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:200])
    elif damage == "not npy":
        entry.write_bytes(b"garbage")
    else:
        np.save(entry, uncached.numpy().astype(np.float32) if damage == "wrong dtype" else uncached.numpy()[:, :2])
    again = video.read_frames(path, WINDOW)
    assert torch.equal(again, uncached)
    assert video.decoded_cache_stats()["rewritten"] == 1
    assert np.array_equal(np.load(entry, allow_pickle=False), uncached.numpy())  # rewritten, whole
    assert not [p for p in entry.parent.iterdir() if p.name.endswith(".tmp")]  # no temp file left


def test_the_memory_lru_bound_evicts_the_least_recently_used(sources):
    path, size = sources["mp4"], 3 * 2 * 16 * 18  # one 2-frame window, in bytes
    video.configure_decoding(Decoding(cache="memory", cache_bytes=2 * size))
    for window in ([0, 1], [2, 3], [0, 1], [4, 5]):  # [0, 1] used again: [2, 3] is the oldest
        video.read_frames(path, window)
    stats = video.decoded_cache_stats()
    assert (stats["evicted"], stats["entries"], stats["bytes"]) == (1, 2, 2 * size)
    video.read_frames(path, [0, 1])
    assert video.decoded_cache_stats()["hits"] == 2
    video.read_frames(path, [2, 3])
    assert video.decoded_cache_stats()["misses"] == 4
    video.read_frames(path, list(range(10)))  # larger than the bound: not kept
    assert video.decoded_cache_stats()["bytes"] <= 2 * size


def test_the_disk_bound_trims_least_recently_used_entries_and_stale_temp_files(sources, tmp_path):
    path = sources["mp4"]
    entry_size = 3 * 2 * 16 * 18 + 128  # a 2-frame window and the .npy header
    video.configure_decoding(Decoding(cache="disk", cache_bytes=int(2.5 * entry_size), cache_dir=str(tmp_path)))
    video.read_frames(path, [0, 1])
    [a] = entries(tmp_path)
    video.read_frames(path, [2, 3])
    [b] = [e for e in entries(tmp_path) if e != a]
    assert a.stat().st_size == b.stat().st_size == entry_size
    os.utime(a, (1000, 1000))
    os.utime(b, (2000, 2000))
    stale = a.parent / f".{a.name}.abcd1234.tmp"  # what a killed writer leaves
    stale.write_bytes(b"half")
    os.utime(stale, (1000, 1000))
    video.read_frames(path, [0, 1])  # a hit marks a as used just now: b is the least recently used
    video.configure_decoding(video.current_decoding())  # a new process: it scans the folder first
    video.read_frames(path, [4, 5])
    left = entries(tmp_path)
    assert a in left and b not in left and len(left) == 2 and not stale.exists()
    assert video.decoded_cache_stats()["evicted"] == 1


def test_trimming_deletes_only_the_cache_s_own_files(sources, tmp_path):
    entry_size = 3 * 2 * 16 * 18 + 128
    foreign = [tmp_path / "ab" / "mine.npy", tmp_path / "ab" / f"{'cd' * 32}.npy",  # not ab...: not ours
               tmp_path / "zz" / f"{'a' * 64}.npy", tmp_path / "ab" / ".mine.npy.abcd1234.tmp"]
    for file in foreign:
        file.parent.mkdir(exist_ok=True)
        if file.suffix == ".npy":
            np.save(file, np.zeros(10 * entry_size, np.uint8))  # large: the first to go were it counted
        else:
            file.write_bytes(b"half")  # named like a temp file of a killed writer, but not of an entry
        os.utime(file, (1000, 1000))  # older than any entry, and than a stale temp file
    video.configure_decoding(Decoding(cache="disk", cache_bytes=int(1.5 * entry_size), cache_dir=str(tmp_path)))
    for window in ([0, 1], [2, 3]):
        video.read_frames(sources["mp4"], window)
    assert all(file.exists() for file in foreign)
    assert len([e for e in entries(tmp_path) if e not in foreign]) == 1  # the bound counts only its own entries
    assert video.decoded_cache_stats()["evicted"] == 1


def test_a_file_system_error_while_trimming_only_warns_once(sources, tmp_path, monkeypatch):
    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    video.configure_decoding(Decoding(cache="disk", cache_bytes=int(1.5 * (3 * 2 * 16 * 18 + 128)),
                                      cache_dir=str(tmp_path)))
    monkeypatch.setattr(Path, "unlink", refuse)
    with pytest.warns(RuntimeWarning, match=r"decoded-frame cache: cannot trim .*Permission denied") as record:
        got = [video.read_frames(sources["mp4"], window) for window in ([0, 1], [2, 3], [4, 5])]
    assert len([w for w in record if "cannot trim" in str(w.message)]) == 1  # two failed trims, one warning
    monkeypatch.undo()
    assert torch.equal(got[2], video.read_frames(sources["mp4"], [4, 5]))
    assert len(entries(tmp_path)) == 3 and video.decoded_cache_stats()["evicted"] == 0


def test_the_cache_folder_is_made_absolute(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    video.configure_decoding(Decoding(cache="disk", cache_dir="~/cache"))
    assert video.current_decoding().cache_dir == str(tmp_path.resolve() / "cache")
    monkeypatch.chdir(tmp_path)
    video.configure_decoding(Decoding(cache="disk", cache_dir="rel"))
    assert video.current_decoding().cache_dir == str(tmp_path.resolve() / "rel")
    video.configure_decoding(video.current_decoding())  # a worker gets the absolute folder as it is
    assert video.current_decoding().cache_dir == str(tmp_path.resolve() / "rel")


def test_a_vanished_frame_file_is_the_one_line_decoding_error(tmp_path, clip):
    folder = tmp_path / "frames"
    files = video.write_frames(folder, clip)
    video.read_frames(folder, [0, 1])  # the folder's listing is now cached
    files[1].unlink()
    video.configure_decoding(Decoding(cache="disk", cache_dir=str(tmp_path / "cache")))
    with pytest.raises(AqakitError, match=r"000002\.jpg: cannot read frame image") as info:
        video.read_frames(folder, [0, 1])
    assert "\n" not in str(info.value) and video.decoded_cache_stats()["misses"] == 0
    assert not entries(tmp_path / "cache")


class Windows(torch.utils.data.Dataset):
    def __init__(self, path: Path) -> None:
        self.path = path

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int) -> dict:
        return {"video": video.read_frames(self.path, [i, i + 1]), "score": float(i)}


def test_loader_workers_decode_as_the_main_process(sources, tmp_path):
    video.configure_decoding(Decoding(cache="disk", cache_dir=str(tmp_path)))
    loader = make_loader(Windows(sources["mp4"]), batch_size=2, num_workers=1, shuffle=False, seed=0, epoch=0,
                         dist=DistInfo())
    assert loader.worker_init_fn.keywords["decoding"] == video.current_decoding()
    batches = list(loader)
    assert len(entries(tmp_path)) == 4  # written by the worker
    assert torch.equal(batches[1]["video"][0], video.read_frames(sources["mp4"], [2, 3]))
    assert video.decoded_cache_stats()["hits"] == 1


def test_loader_workers_refuse_gpu_decoding(sources, monkeypatch):
    monkeypatch.setattr(video, "_settings", Decoding(device="cuda"))
    with pytest.raises(RecipeError, match=r"'data\.decode_device': cuda needs data\.num_workers: 0"):
        make_loader(Windows(sources["mp4"]), batch_size=2, num_workers=2, shuffle=False, seed=0, epoch=0,
                    dist=DistInfo())


# -- recipe keys -----------------------------------------------------------------------------------
@needs_toy
def test_decoding_keys_default_off_and_read_a_bare_yaml_off(toy_plugins, tmp_path):
    recipe = load_recipe(TOY_RECIPE, registry=toy_plugins.registry)
    data = recipe.data
    assert (data.decoded_cache, data.decoded_cache_gb, data.decoded_cache_dir, data.decode_device) == (
        "off", 8.0, None, "cpu")
    assert recipe_decoding(recipe) == Decoding(cache="off", cache_bytes=8 * 2**30)
    bare = load_recipe(TOY_RECIPE, ["data.decoded_cache=off"], registry=toy_plugins.registry)  # YAML: false
    assert bare.data.decoded_cache == "off"
    disk = load_recipe(TOY_RECIPE, ["data.decoded_cache=disk", "data.decoded_cache_gb=0.5",
                                    f"data.decoded_cache_dir={tmp_path}"], registry=toy_plugins.registry)
    assert recipe_decoding(disk) == Decoding(cache="disk", cache_bytes=2**29, cache_dir=str(tmp_path))


@needs_toy
@pytest.mark.parametrize("overrides, message", [
    (["data.decoded_cache=sometimes"], r"'data\.decoded_cache': expected one of 'off', 'memory', 'disk'"),
    (["data.decoded_cache=true"], r"'data\.decoded_cache': expected one of 'off', 'memory', 'disk', got True"),
    (["data.decoded_cache_gb=0"], r"'data\.decoded_cache_gb': must be a positive number, got 0"),
    (["data.decoded_cache_gb=.inf"], r"'data\.decoded_cache_gb': must be a positive number, got inf"),
    (["data.decoded_cache_gb=lots"], r"'data\.decoded_cache_gb': expected float"),
    (["data.decoded_cache_dir=[a]"], r"'data\.decoded_cache_dir': expected str or null"),
    (["data.decode_device=tpu"], r"'data\.decode_device': expected one of 'cpu', 'cuda'"),
    (["data.decode_device=cuda", "data.num_workers=2"],
     r"'data\.decode_device': cuda needs data\.num_workers: 0 .*got data\.num_workers: 2"),
])
def test_bad_decoding_keys_name_the_field(toy_plugins, overrides, message):
    with pytest.raises(RecipeError, match=message) as info:
        load_recipe(TOY_RECIPE, overrides, registry=toy_plugins.registry)
    assert "\n" not in str(info.value)


# -- decode_device: cuda ----------------------------------------------------------------------------
@needs_toy
@pytest.mark.parametrize("missing, message", [
    ("torchcodec", r"^recipe field 'data\.decode_device': cuda: torchcodec is not installed "
                   r"\(pip install torchcodec, or set data\.decode_device: cpu\)$"),
    ("cuda", r"^recipe field 'data\.decode_device': cuda: torch sees no CUDA GPU "
             r"\(run on a machine with a CUDA GPU, or set data\.decode_device: cpu\)$"),
])
def test_gpu_decoding_that_cannot_work_is_one_line_naming_the_field(toy_plugins, monkeypatch, missing, message):
    real = importlib.util.find_spec

    def find_spec(name: str, *args):
        if name == "torchcodec":
            return None if missing == "torchcodec" else object()  # installed, as far as the check looks
        return real(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    recipe = load_recipe(TOY_RECIPE, ["data.decode_device=cuda"], registry=toy_plugins.registry)
    with pytest.raises(RecipeError, match=message):
        recipe_decoding(recipe)
    with pytest.raises(AqakitError, match=r"^cannot decode videos on cuda: .*decode on the cpu\)$"):
        video.configure_decoding(Decoding(device="cuda"))
    assert video.current_decoding() == Decoding()


@needs_toy
@pytest.mark.skipif(video.gpu_decoding_problem() is None, reason="GPU decoding works here")
def test_a_run_with_gpu_decoding_stops_before_its_folder_is_made(toy_plugins, tmp_path):
    from aqakit.engine.train import train

    recipe = load_recipe(TOY_RECIPE, ["data.decode_device=cuda"], registry=toy_plugins.registry)
    with pytest.raises(RecipeError, match=r"'data\.decode_device': cuda: .*set data\.decode_device: cpu\)$"):
        train(recipe, toy_plugins, run_dir=tmp_path / "run")
    assert not (tmp_path / "run").exists() and video.current_decoding() == Decoding()


@pytest.mark.cuda
@pytest.mark.skipif(video.gpu_decoding_problem() is not None,
                    reason=f"GPU decoding unavailable here ({video.gpu_decoding_problem()}); "
                           "run on a CUDA machine with torchcodec: pytest -m cuda")
def test_gpu_decoding_returns_what_cpu_decoding_does(sources):
    path = sources["mp4"]
    cpu, cpu_folder = video.read_frames(path, WINDOW), video.read_frames(sources["folder"], WINDOW)
    video.configure_decoding(Decoding(device="cuda"))
    gpu = video.read_frames(path, WINDOW)
    assert gpu.device.type == "cpu" and gpu.dtype == torch.uint8 and gpu.shape == cpu.shape
    assert torch.equal(gpu[:, 1], gpu[:, 2])  # the repeated frame
    assert float((gpu.float() - cpu.float()).abs().mean()) < 3  # colour conversion may differ by a level or two
    assert torch.equal(video.read_frames(sources["folder"], WINDOW), cpu_folder)  # frame folders stay on the cpu


# -- a training run ---------------------------------------------------------------------------------
@needs_toy
def test_a_run_with_a_disk_cache_matches_one_without(toy_plugins, tmp_path):
    from aqakit.engine.train import train
    from aqakit_table.sample import write_sample

    root = write_sample(tmp_path / "table", n=9, frames=8, size=16)
    base = [f"data.dataset={{name: video_table, root: '{root}', frames: 4}}", "data.batch_size=4",
            "train.epochs=2"]
    plain = train(load_recipe(TOY_RECIPE, base, registry=toy_plugins.registry), toy_plugins,
                  run_dir=tmp_path / "plain")
    cached_recipe = load_recipe(TOY_RECIPE, [*base, "data.decoded_cache=disk", "data.num_workers=1",
                                             f"data.decoded_cache_dir={tmp_path / 'decoded'}"],
                                registry=toy_plugins.registry)
    cached = train(cached_recipe, toy_plugins, run_dir=tmp_path / "cached")
    assert cached["test"] == plain["test"] and cached["val"] == plain["val"]
    assert len(entries(tmp_path / "decoded")) == 9  # one window per video, read every epoch
    assert video.current_decoding() == Decoding()  # the run's settings end with it
    decoded = video.decoded_frames()  # a second run, decoding in this process: every window is a disk hit
    again = load_recipe(TOY_RECIPE, [*base, "train.epochs=1", "data.decoded_cache=disk", "data.num_workers=0",
                                     f"data.decoded_cache_dir={tmp_path / 'decoded'}"], registry=toy_plugins.registry)
    train(again, toy_plugins, run_dir=tmp_path / "again")
    assert video.decoded_frames() == decoded and len(entries(tmp_path / "decoded")) == 9
