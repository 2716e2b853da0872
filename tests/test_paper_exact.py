"""The paper's models as the paper recipes build them, checked against the authors' released code.

Release: github.com/ParitoshParmar/MTL-AQA at bf7dcb2 (folder ``MTL-AQA_code_release/``), cited below as
FILE:LINE. Every figure is derived from those lines (the arithmetic is beside it).
``tests/data/mtl_aqa_release_reference.json`` holds the release modules' state-dict keys and shapes at
the release's sizes and their outputs for seeded weights (:func:`release_value`) and inputs, written by
``tests/data/make_mtl_aqa_release_reference.py`` from the release's own classes (checked out outside this
repository; none of its code is part of aqakit). Counts and shapes are checked on the meta device (no
memory, no compute); the numerical checks run the recipes' heads at paper size on CPU (a few seconds).
"""

from __future__ import annotations

import json
import math
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

import pytest
import torch
import yaml
from conftest import ROOT
from torch import nn

from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit.engine.model import build_model
from aqakit.recipe import load_recipe
from aqakit.testing import check_head
from aqakit_caption import CaptionHead
from aqakit_mscadc import MSCADC, ContextNet, MSCADCCaptionHead, stepped_indices
from aqakit_mscadc.backbone import from_release

REFERENCE = ROOT / "tests" / "data" / "mtl_aqa_release_reference.json"
C3D_AVG_MTL = "recipes/diving_mtl.yaml"
MSCADC_MTL = "recipes/diving_mscadc_mtl.yaml"
VOCAB = 5779  # opts.py:40 vocab_size = 5779 (the release's vocab.json has 5781 entries: QUIRKS 1)
# A caption vocabulary of exactly VOCAB ids: word mode is ['<eos>', '<sos>', 5776 words, '<unk>']
VOCAB_LABELS = [{"caption": " ".join(f"w{i}" for i in range(j, j + 76))} for j in range(0, VOCAB - 3, 76)]
LONG = " ".join(["splash"] * 120)  # longer than max_len: teacher forcing runs the release's 99 steps
CAPTIONS = ["a forward dive with a rip entry", "big splash there", "he over rotates the pike"]
FIELDS = {"position": "position", "armstand": "armstand", "rot_type": "rotation_type", "ss_no": "ss_no",
          "tw_no": "tw_no"}  # dive_classifier.py:23-27 / head_dive_classifier.py:54-63 -> dive_code fields
DIVE_CLASSES = {"position": 3, "armstand": 2, "rotation_type": 4, "ss_no": 10, "tw_no": 8}
RELEASE_FRAMES = [0, 6, 13, 19, 26, 32, 39, 45, 52, 58, 65, 71, 78, 84, 91, 97]  # dataloader_MSCADC.py:112


# -- seeded weights and inputs, the same for the release's classes and aqakit's ------------------------


def release_value(key: str, shape: Sequence[int]) -> torch.Tensor:
    """The seeded value of the release tensor ``key``: BatchNorm scales and variances in [0.5, 1.5),
    other weights N(0, 1 / fan_in), biases and means N(0, 0.01); seeded by the key's CRC-32."""
    g = torch.Generator().manual_seed(zlib.crc32(key.encode()))
    leaf = key.rsplit(".", 1)[-1]
    if leaf == "running_var" or (leaf == "weight" and len(shape) == 1):
        return torch.rand(tuple(shape), generator=g) + 0.5
    if len(shape) >= 2:
        return torch.randn(tuple(shape), generator=g) / math.sqrt(math.prod(shape[1:]))
    return torch.randn(tuple(shape), generator=g) * 0.1


def release_input(name: str, shape: Sequence[int]) -> torch.Tensor:
    """A seeded standard normal input (seeded by the name's CRC-32)."""
    return torch.randn(tuple(shape), generator=torch.Generator().manual_seed(zlib.crc32(name.encode())))


def release_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A release module's state dict with every float tensor set by :func:`release_value`."""
    return {k: release_value(k, v.shape) if v.is_floating_point() else v for k, v in module.state_dict().items()}


# -- the release's layer names -> aqakit's ---------------------------------------------------------------


def c3d_key(key: str) -> str:
    """C3D_altered.py:28-43 ``conv1`` .. ``conv5b`` -> the ``c3d`` backbone."""
    return f"convs.{key}"


def fc6_key(key: str) -> str:
    """my_fc6.py:23 ``fc`` -> the ``avg`` aggregator's shared layer."""
    return key.replace("fc.", "proj.0.", 1)


def score_key(key: str) -> str:
    """score_regressor.py:23 ``fc_final_score`` -> the ``score`` head's Linear (after its Dropout)."""
    return key.replace("fc_final_score.", "fc.1.", 1)


def dive_key(key: str) -> str:
    """dive_classifier.py:23-27 ``fc_<field>`` -> the ``dive_code`` head's ``fcs.<field>``."""
    field, param = re.fullmatch(r"fc_(\w+?)\.(weight|bias)", key).groups()
    return f"fcs.{FIELDS[field]}.{param}"


def s2vt_key(key: str) -> str:
    """S2VTModel.py:33-45 ``rnn1``, ``rnn2``, ``embedding``, ``out`` -> the caption head (``decoder: s2vt``)."""
    return re.sub(r"^rnn1\.", "encoder.", re.sub(r"^rnn2\.", "decoder.", key))


def mscadc_head_key(key: str, conv3: str = "out") -> str:
    """head_fs_2.py / head_dive_classifier.py / head_captions.py names -> the MSCADC heads'.

    ``head_conv1`` -> ``body.reduce``; ``cntxt_conv<i>``/``cntxt_bn<i>`` -> ``body.context.layers.<i-1>``
    (conv, BN; ``cntxt_conv6`` with ``head_bn1`` is the final 1x1x1 layer); ``head_conv2``/``head_bn2`` ->
    ``body.post``; ``head_conv3`` -> ``conv3`` (score: ``out``; caption: ``flat``); ``head_conv3_<field>``
    -> ``fcs.<field>``; the caption's S2VT as :func:`s2vt_key`."""
    if match := re.fullmatch(r"cntxt_(conv|bn)(\d)\.(.+)", key):
        kind, index, param = match.groups()
        return f"body.context.layers.{int(index) - 1}.{0 if kind == 'conv' else 1}.{param}"
    if match := re.fullmatch(r"head_conv3_(\w+?)\.(weight|bias)", key):
        return f"fcs.{FIELDS[match.group(1)]}.{match.group(2)}"
    for old, new in (("head_conv1.", "body.reduce."), ("head_bn1.", "body.context.layers.5.1."),
                     ("head_conv2.", "body.post.0."), ("head_bn2.", "body.post.1."), ("head_conv3.", f"{conv3}.")):
        if key.startswith(old):
            return new + key[len(old):]
    return s2vt_key(key)


# (fixture module, the aqakit component it is, key mapping)
C3D_AVG_PARTS = [("C3D_altered", "backbone", c3d_key), ("my_fc6", "aggregator", fc6_key),
                 ("score_regressor", "score", score_key), ("dive_classifier", "dive_code", dive_key),
                 ("S2VTModel (C3D-AVG)", "caption", s2vt_key)]
MSCADC_PARTS = [("C3D_dilated_body", "backbone", from_release), ("C3D_dilated_head_fs", "score", mscadc_head_key),
                ("C3D_dilated_head_classifier", "dive_code", mscadc_head_key),
                ("S2VTModel (MSCADC)", "caption", lambda k: mscadc_head_key(k, conv3="flat"))]


@pytest.fixture(autouse=True)
def _no_meteor(monkeypatch):
    """Caption metrics without METEOR's JVM (about 15 s to start; the caption plugin's tests cover it)."""
    monkeypatch.setattr("aqakit_caption.scores._meteor_disabled", True, raising=False)


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text(encoding="utf-8"))


def gru(inputs: int, hidden: int = 512) -> int:
    """Parameters of one GRU layer: input and hidden weights of the three gates, and both biases."""
    return 3 * hidden * (inputs + hidden + 2)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def component(model: nn.Module, part: str) -> nn.Module:
    return getattr(model, part) if part in ("backbone", "aggregator") else model.heads[part]


def meta_model(path: str, registry) -> nn.Module:
    """The recipe's model on the meta device, its caption head fitted to a vocabulary of VOCAB ids."""
    with torch.device("meta"):
        model = build_model(load_recipe(ROOT / path), registry)
        if "caption" in model.heads:
            model.heads["caption"].fit(VOCAB_LABELS)
    assert model.heads["caption"].tokenizer.vocab_size == VOCAB
    return model


def recipe_head(path: str, head_id: str, registry, **injected) -> nn.Module:
    """One head of a recipe, built from its recipe arguments (real tensors) with the injected sizes."""
    cfg = load_recipe(ROOT / path).model.heads[head_id]
    return registry.get("head", cfg.name).factory(**injected, **cfg.args)


def is_buffer(key: str) -> bool:
    """BatchNorm statistics: in the state dict, not parameters."""
    return key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked")


def keys_and_shapes(module: nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


# -- counts, keys and shapes -----------------------------------------------------------------------------


def test_c3d_avg_mtl_has_the_release_parameters(aqakit_plugins, reference):
    model = meta_model(C3D_AVG_MTL, aqakit_plugins.registry)
    counts = {part: n_params(component(model, part)) for part in ("backbone", "aggregator", "score", "dive_code",
                                                                  "caption")}
    assert counts == {
        # C3D_altered.py:28-43: 27 * (3*64 + 64*128 + 128*256 + 256*256 + 256*512 + 3 * 512*512) + biases 2,752
        "backbone": 27_655_936,
        "aggregator": 33_558_528,  # my_fc6.py:23 Linear(8192, 4096): 8192 * 4096 + 4096
        "score": 4_097,  # score_regressor.py:23 Linear(4096, 1)
        "dive_code": 110_619,  # dive_classifier.py:23-27: 4096 * (3+2+4+10+8) + 27
        "caption": 24_810_131,  # S2VTModel.py:33-45 built as train_test_C3DAVG.py:284-287 with opts.py:40-47
    }
    caption = model.heads["caption"]
    assert {name: n_params(getattr(caption, name)) for name in ("encoder", "decoder", "embedding", "out")} == {
        "encoder": gru(8192) + gru(512),  # 14,948,352: rnn1 = GRU(8192, 512, 2 layers), S2VTModel.py:33-34, opts.py:44
        "decoder": gru(1024) + gru(512),  # 3,938,304: rnn2 = GRU(512 + 512, 512, 2 layers), S2VTModel.py:35-36
        "embedding": VOCAB * 512,  # 2,958,848: S2VTModel.py:44, opts.py:40,43
        "out": 512 * VOCAB + VOCAB,  # 2,964,627: S2VTModel.py:45
    }
    assert caption.encoder.dropout == caption.decoder.dropout == 0.5  # opts.py:47 caption_lstm_dropout
    assert isinstance(caption.drop, nn.Identity) and not hasattr(caption, "context")
    for module, part, rename in C3D_AVG_PARTS:  # the same tensors, key by key, shape by shape
        release = {rename(k): tuple(v) for k, v in reference["modules"][module]["keys"].items()}
        assert keys_and_shapes(component(model, part)) == release, module
        assert sum(math.prod(s) for k, s in release.items() if not is_buffer(k)) == counts[part], module


def test_mscadc_mtl_has_the_release_parameters(aqakit_plugins, reference):
    model = meta_model(MSCADC_MTL, aqakit_plugins.registry)
    counts = {part: n_params(component(model, part)) for part in ("backbone", "score", "dive_code", "caption")}
    body = 436_740  # head_fs_2.py:27-52: head_conv1 3,084 + context 429,708 (cntxt_conv1..6, bn1..5) + head_bn1 24
    #                 + head_conv2 3,900 + head_bn2 24 (widths 24, 24, 48, 96, 96, head_fs_2.py:30-45)
    assert counts == {
        "backbone": 6_918_720,  # body.py:25-47 (convs and BatchNorms)
        "score": body + 325,  # 437,065: head_fs_2.py:54 head_conv3 Conv3d(12, 1, 3): 12 * 27 + 1
        "dive_code": body + 8_775,  # 445,515: head_dive_classifier.py:54-63: 27 * 12 * 27 + 27
        "caption": 14_511_059,  # head_captions.py:34-80 built as train_test_MSCADC.py:265-268 with opts.py:40-47
    }
    caption = model.heads["caption"]
    assert {name: n_params(getattr(caption, name)) for name in ("body", "flat", "encoder", "decoder", "embedding",
                                                                "out")} == {
        "body": body, "flat": 3_900,  # head_captions.py:79 head_conv3 Conv3d(12, 12, 3): 12 * 12 * 27 + 12
        "encoder": gru(1200) + gru(512),  # 4,208,640: rnn1 = GRU(1200, 512, 2), head_captions.py:34-35, opts.py:44
        "decoder": gru(1024) + gru(512),  # 3,938,304: head_captions.py:36-37
        "embedding": VOCAB * 512, "out": 512 * VOCAB + VOCAB,  # head_captions.py:45,47
    }
    assert [c.out_channels for c in caption.body.context.layers.modules() if isinstance(c, nn.Conv3d)] == [
        24, 24, 48, 96, 96, 12]  # head_captions.py:55-70 btlnk * 2, 2, 4, 8, 8, then btlnk
    for module, part, rename in MSCADC_PARTS:
        release = {rename(k): tuple(v) for k, v in reference["modules"][module]["keys"].items()}
        assert keys_and_shapes(component(model, part)) == release, module
        assert sum(math.prod(s) for k, s in release.items() if not is_buffer(k)) == counts[part], module


def test_c3d_avg_mtl_shapes(aqakit_plugins):
    model = meta_model(C3D_AVG_MTL, aqakit_plugins.registry).eval()
    video = torch.empty(2, 3, 103, 112, 112, dtype=torch.uint8, device="meta")  # opts.py:25,28 (103 frames, 112)
    rep = model.represent(video)
    assert rep.sequence.shape == (2, 6, 8192)  # C3D_altered.py:68 view(-1, 8192); 6 clips: train_test_C3DAVG.py:70
    assert rep.pooled.shape == (2, 4096)  # my_fc6.py:23
    assert model.heads["score"](rep).shape == (2,)  # score_regressor.py:23 gives (2, 1); aqakit drops the 1
    assert {f: tuple(t.shape) for f, t in model.heads["dive_code"](rep).items()} == {
        f: (2, n) for f, n in DIVE_CLASSES.items()}  # dive_classifier.py:23-27
    assert caption_log_prob_shape(model.heads["caption"], rep) == (2, 99, VOCAB)  # S2VTModel.py:62, opts.py:38


def test_mscadc_mtl_shapes(aqakit_plugins):
    model = meta_model(MSCADC_MTL, aqakit_plugins.registry).eval()
    assert model.backbone.out_shape == (256, 2, 20, 20)  # body.py:46 conv5b pads 1 with dilation 2: 4x22x22 -> 2x20x20
    assert stepped_indices(103, 16, model.backbone.frame_step).tolist() == RELEASE_FRAMES
    seen: dict[str, tuple[int, ...]] = {}
    body = model.heads["score"].body
    for name, module in {"reduce": body.reduce, "pad": body.context.pad, "body": body}.items():
        module.register_forward_hook(lambda m, args, out, name=name: seen.update({name: tuple(out.shape)}))
    video = torch.empty(2, 3, 103, 180, 180, dtype=torch.uint8, device="meta")  # opts.py:25,28
    rep = model.represent(video)
    assert rep.pooled.shape == (2, 256, 2, 20, 20)
    assert model.heads["score"](rep).shape == (2,)  # head_fs_2.py:84-85 (one value per sample)
    assert seen == {"reduce": (2, 12, 4, 22, 22),  # head_fs_2.py:27 head_conv1 pads 1
                    "pad": (2, 12, 22, 40, 40),  # head_fs_2.py:29 ReplicationPad3d(9)
                    "body": (2, 12, 2, 11, 11)}  # head_fs_2.py:49-52 after head_pool1 and head_conv2
    assert {f: tuple(t.shape) for f, t in model.heads["dive_code"](rep).items()} == {
        f: (2, n) for f, n in DIVE_CLASSES.items()}  # head_dive_classifier.py:84-88
    caption = model.heads["caption"]
    assert caption.sequence(rep).shape == (2, 1, 1200)  # head_captions.py:101-104: 12 x 1 x 10 x 10, one step
    assert caption_log_prob_shape(caption, rep) == (2, 99, VOCAB)  # head_captions.py:119, opts.py:38


def caption_log_prob_shape(head: CaptionHead, rep: Representation) -> tuple[int, ...]:
    """Shape of the teacher-forced log-probabilities for two captions longer than ``max_len``."""
    context, state = head._start(head(rep))
    inputs, _, _ = head.teacher_forcing([LONG, LONG], context.device)
    logits, _ = head._step(inputs, context, state)
    return tuple(logits.shape)


# -- the same numbers as the release's classes --------------------------------------------------------


def load_release(module: nn.Module, entry: dict, rename) -> None:
    """Load :func:`release_value` weights for the release keys of ``entry`` into ``module`` (strictly)."""
    state = {rename(k): release_value(k, shape) for k, shape in entry["keys"].items() if "num_batches" not in k}
    missing, unexpected = module.load_state_dict(state, strict=False)
    assert not unexpected and all("num_batches_tracked" in k for k in missing), (missing, unexpected)


def check_caption(head: CaptionHead, rep: Representation, expected: dict) -> None:
    """Teacher-forced log-probabilities and greedy words equal the release's for the same weights."""
    assert [head.tokenizer.encode(c) for c in CAPTIONS[:2]] == expected["token_ids"]
    with torch.no_grad():
        out = head(rep)
        context, state = head._start(out)
        inputs, _, _ = head.teacher_forcing(CAPTIONS[:2])
        log_probs = head._step(inputs, context, state)[0].log_softmax(-1)
        generated = head.generate(out, "greedy")
    reference = torch.tensor(expected["log_probs"])
    assert log_probs.shape == reference.shape
    torch.testing.assert_close(log_probs, reference, atol=1e-4, rtol=1e-4)
    eos = head.tokenizer.eos_id
    for ours, theirs in zip(generated.tolist(), expected["greedy"]):
        end = theirs.index(eos) + 1 if eos in theirs else len(theirs)
        assert ours[:end] == theirs[:end]


def test_c3d_avg_caption_computes_as_the_release(aqakit_plugins, reference):
    head = recipe_head(C3D_AVG_MTL, "caption", aqakit_plugins.registry, in_dim=4096, seq_dim=8192)
    head.fit([{"caption": c} for c in CAPTIONS])
    entry = reference["outputs"]["S2VTModel (C3D-AVG)"]
    load_release(head, {"keys": entry["keys"]}, s2vt_key)
    head.eval()
    feats = release_input("c3d_clip_features", entry["input"])
    check_caption(head, Representation(pooled=torch.zeros(2, 4096), sequence=feats), entry)


def test_mscadc_heads_compute_as_the_release(aqakit_plugins, reference):
    registry, outputs = aqakit_plugins.registry, reference["outputs"]
    fmap = release_input("mscadc_map", outputs["mscadc_map_input"])
    rep = Representation(pooled=fmap)
    score = recipe_head(MSCADC_MTL, "score", registry, in_dim=256)
    load_release(score, reference["modules"]["C3D_dilated_head_fs"], mscadc_head_key)
    dive = recipe_head(MSCADC_MTL, "dive_code", registry, in_dim=256)
    load_release(dive, reference["modules"]["C3D_dilated_head_classifier"], mscadc_head_key)
    with torch.no_grad():
        torch.testing.assert_close(score.eval()(rep), torch.tensor(outputs["C3D_dilated_head_fs"]),
                                   atol=1e-4, rtol=1e-4)
        logits = dive.eval()(rep)
    for field, values in outputs["C3D_dilated_head_classifier"].items():
        torch.testing.assert_close(logits[FIELDS[field]], torch.tensor(values), atol=1e-4, rtol=1e-4)
    caption = recipe_head(MSCADC_MTL, "caption", registry, in_dim=256)
    caption.fit([{"caption": c} for c in CAPTIONS])
    entry = outputs["S2VTModel (MSCADC)"]
    load_release(caption, {"keys": entry["keys"]}, lambda k: mscadc_head_key(k, conv3="flat"))
    check_caption(caption.eval(), rep, entry)


def test_mscadc_backbone_computes_as_the_release(aqakit_plugins, reference):
    entry = reference["outputs"]["C3D_dilated_body"]
    args = {**load_recipe(ROOT / MSCADC_MTL).model.backbone.args, "frame_size": entry["frame_size"]}
    backbone = aqakit_plugins.registry.get("backbone", "mscadc").factory(**args)
    load_release(backbone, reference["modules"]["C3D_dilated_body"], from_release)
    video = release_input("mscadc_video", entry["input"])  # a 103-frame window; the backbone samples 16
    with torch.no_grad():
        out = backbone.eval()(video)
    assert tuple(out.shape) == tuple(entry["shape"])
    torch.testing.assert_close(out.mean(dim=(0, 2, 3, 4)), torch.tensor(entry["channel_means"]), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.mean(dim=(0, 1)).flatten(), torch.tensor(entry["position_means"]),
                               atol=1e-4, rtol=1e-4)


# -- the recipes ----------------------------------------------------------------------------------------


RELEASE_MSCADC_HEAD = {"widths": [24, 24, 48, 96, 96], "context_padding": "replicate", "reduce_padding": 1}
RELEASE_CAPTION = {"decoder": "s2vt", "dropout": 0.5, "max_len": 99, "tokenizer": "word", "loss": "paper_sum"}
PAPER_RECIPES = [C3D_AVG_MTL, MSCADC_MTL, *(f"recipes/paper/{n}.yaml" for n in (
    "c3d_avg_aqa", "c3d_avg_aqa_cls", "c3d_avg_aqa_caps", "mscadc_aqa", "mscadc_aqa_cls", "mscadc_aqa_caps"))]


@pytest.mark.parametrize("path", PAPER_RECIPES)
def test_paper_recipes_set_the_release_options(path):
    model = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))["model"]
    heads = model["heads"]
    if model["backbone"]["name"] == "mscadc":
        assert model["backbone"]["conv5b_padding"] == 1 and model["backbone"]["frame_step"] == 6.5
        assert all(RELEASE_MSCADC_HEAD.items() <= head.items() for head in heads.values())
        if "caption" in heads:
            assert heads["caption"]["steps"] == "flat" and heads["caption"]["flat_dim"] == 1200
    else:
        assert model["clips"] == {"count": 6, "stride": 16} and model["aggregator"]["proj_dim"] == 4096
        assert not model["backbone"].get("batchnorm", False)
    assert heads["score"]["scale"] == 17.0 and heads["score"]["loss"] == "l2+l1"  # opts.py:35; train_test_*.py
    assert all(h.get("weight", 1.0) == 1.0 for k, h in heads.items() if k != "caption")
    if "caption" in heads:
        assert RELEASE_CAPTION.items() <= heads["caption"].items() and heads["caption"]["weight"] == 0.01


@pytest.mark.parametrize("path", ["recipes/quickstart.yaml", *sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / "recipes" / "cpu").glob("*.yaml"))])
def test_cpu_recipes_keep_the_aqakit_caption_decoder(path):
    data = yaml.safe_load((ROOT / path).read_text(encoding="utf-8"))
    heads = (data.get("model") or {}).get("heads") or {}
    assert all(h.get("decoder", "aqakit") == "aqakit" for h in heads.values() if isinstance(h, dict))


# -- the new options on their own -------------------------------------------------------------------------


class S2VTCaptionHead(CaptionHead):
    contract_kwargs: ClassVar[dict] = {**CaptionHead.contract_kwargs, "decoder": "s2vt"}


def test_s2vt_caption_head_passes_the_contract_and_learns():
    check_head(S2VTCaptionHead, name="head 'caption' (decoder: s2vt)")
    torch.manual_seed(0)
    head = CaptionHead(in_dim=8, seq_dim=8, hidden=32, embed=16, dropout=0.0, max_len=12, tokenizer="word",
                       decoder="s2vt")
    rep = Representation(pooled=torch.zeros(4, 8), sequence=release_input("s2vt_tiny", (4, 3, 8)))
    captions = ["a clean entry", "big splash there", "he over rotates it", "lovely tuck position"]
    head.fit([{"caption": c} for c in captions])
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        head.loss(head(rep), {"caption": captions}).backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        out = head(rep)
        assert out["state"].shape == (4, 2 * 2, 32)  # both GRUs' states, batch first
        assert head.decode_rows(head.generate(out, "greedy")) == captions
        assert head.decode_rows(head.generate(out, "beam")) == captions


def test_s2vt_zero_frame_shortcut_equals_the_encoder_on_zero_frames():
    """The S2VT's per-word encoder step skips multiplying its zero frames: same outputs, states and gradients
    as the module on real zeros, in training (dropout between 2 layers, same seed) and evaluation."""
    head = CaptionHead(in_dim=8, seq_dim=64, hidden=16, embed=8, layers=2, dropout=0.5, tokenizer="word",
                       decoder="s2vt", vocab_size=8)
    state = torch.randn(2, 3, 16)
    for training in (True, False):
        head.train(training)
        results = []
        for shortcut in (True, False):
            head.zero_grad()
            torch.manual_seed(1)
            if shortcut:
                out, last = head._encode_zero_frames(torch.zeros(3, 5, 8), state)
            else:
                out, last = head.encoder(torch.zeros(3, 5, 64), state)
            (out.square().sum() + last.sum()).backward()
            grads = {n: p.grad.clone() for n, p in head.encoder.named_parameters() if p.grad is not None}
            results.append((out.detach(), last.detach(), grads))
        (out_a, last_a, grads_a), (out_b, last_b, grads_b) = results
        assert torch.equal(out_a, out_b) and torch.equal(last_a, last_b)
        assert set(grads_b) - set(grads_a) == {"weight_ih_l0"} and not grads_b["weight_ih_l0"].any()
        for name, grad in grads_a.items():
            torch.testing.assert_close(grad, grads_b[name], rtol=0, atol=1e-6)


def test_mscadc_caption_flat_dim_mismatch_is_one_clear_error():
    head = MSCADCCaptionHead(in_dim=8, hidden=8, embed=8, tokenizer="word", steps="flat", vocab_size=8)
    head.fit([{"caption": c} for c in CAPTIONS])
    with pytest.raises(AqakitError, match=r"gives 12 x 1 x 3 x 3 = 108 features .* set the head's flat_dim: 108"):
        head(Representation(pooled=torch.randn(2, 8, 2, 8, 8)))
    small = MSCADCCaptionHead(in_dim=8, hidden=8, embed=8, tokenizer="word", steps="flat", flat_dim=108)
    small.fit([{"caption": c} for c in CAPTIONS])
    assert small(Representation(pooled=torch.randn(2, 8, 2, 8, 8)))["memory"].shape == (2, 1, 8)


def test_context_net_replicate_padding():
    net = ContextNet(widths=[24, 24, 48, 96, 96], padding="replicate")
    convs = [m for m in net.modules() if isinstance(m, nn.Conv3d)]
    assert [c.padding for c in convs] == [(0, 0, 0)] * 6 and net.pad.padding == (9,) * 6
    x = torch.randn(1, 12, 2, 5, 4)
    assert net(x).shape == x.shape
    with pytest.raises(AqakitError, match="padding"):
        ContextNet(padding="reflect")


def test_mscadc_backbone_release_options():
    backbone = MSCADC(width=0.125, frame_size=48, frames=16, conv5b_padding=1, frame_step=6.5)
    assert backbone.out_shape == (32, 2, 4, 4)
    seen = []
    backbone.convs["conv1"].register_forward_pre_hook(lambda mod, args: seen.append(args[0][0, 0, :, 0, 0]))
    video = torch.arange(103, dtype=torch.float32).view(1, 1, 103, 1, 1).expand(1, 3, 103, 48, 48)
    assert backbone.eval()(video).shape == (1, 32, 2, 4, 4)
    assert seen[0].tolist() == RELEASE_FRAMES
    for bad in ({"conv5b_padding": 0}, {"frame_step": 0.0}):
        with pytest.raises(AqakitError, match="conv5b_padding"):
            MSCADC(width=0.125, frame_size=48, **bad)
    with pytest.raises(AqakitError, match="leaves no feature map"):
        MSCADC(width=0.125, frame_size=24, frames=4, conv5b_padding=1)


def test_reference_file_names_its_source(reference):
    assert reference["source"].startswith("ParitoshParmar/MTL-AQA@bf7dcb2")
    assert set(reference["modules"]) == {m for m, _, _ in C3D_AVG_PARTS + MSCADC_PARTS}
    assert Path(ROOT / "tests" / "data" / "make_mtl_aqa_release_reference.py").is_file()
