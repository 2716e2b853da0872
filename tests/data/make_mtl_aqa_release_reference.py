"""Regenerate ``mtl_aqa_release_reference.json`` from the MTL-AQA authors' released classes themselves.

Writes the state-dict keys and shapes of the release's modules, built as its training scripts build
them (``train_test_C3DAVG.py`` lines 259-287, ``train_test_MSCADC.py`` lines 244-268, ``opts.py``), and
their outputs for the seeded weights and inputs of ``tests/test_paper_exact.py`` (``release_value``,
``release_input``), which checks aqakit's paper recipes against them. The release is checked out outside
this repository; its code is never part of aqakit:

    git clone https://github.com/ParitoshParmar/MTL-AQA ../MTL-AQA
    PYTHONPATH=../MTL-AQA/MTL-AQA_code_release:tests python tests/data/make_mtl_aqa_release_reference.py

The release moves tensors to the GPU inside ``forward``; here ``Tensor.cuda`` is the identity, so it
runs on CPU (float32).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import torch

HERE = Path(__file__).resolve().parent


def commit_of(module: object) -> str:
    """The git commit of the checkout a module was imported from ("unknown" outside git)."""
    folder = Path(module.__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or "unknown"


def rounded(value: Any) -> Any:
    """Tensors and nested lists as JSON-ready lists, floats to 8 significant digits."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, list):
        return [rounded(v) for v in value]
    return float(f"{value:.8g}") if isinstance(value, float) else value


def dump(value: Any, indent: int = 0) -> str:
    """JSON with one mapping entry per line and every list on one line."""
    if not isinstance(value, dict):
        return json.dumps(value)
    pad = "  " * (indent + 1)
    rows = [f"{pad}{json.dumps(k)}: {dump(v, indent + 1)}" for k, v in value.items()]
    return "{\n" + ",\n".join(rows) + "\n" + "  " * indent + "}"


def keys(module: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in module.state_dict().items()}


def seeded(module: torch.nn.Module) -> torch.nn.Module:
    from test_paper_exact import release_state

    module.load_state_dict(release_state(module))
    return module.eval()


def caption_outputs(model_cls: type, dim_vid: int, feats: torch.Tensor, built_with: str) -> dict[str, Any]:
    """A release S2VT with the word vocabulary of CAPTIONS: teacher-forced log-probabilities and greedy words."""
    import opts
    from test_paper_exact import CAPTIONS

    from aqakit_caption.tokenizer import CaptionTokenizer

    tok = CaptionTokenizer.train(CAPTIONS, mode="word")
    ids = [tok.encode(c) for c in CAPTIONS[:2]]
    steps = max(len(i) for i in ids) + 1  # aqakit's teacher-forcing length: bos + the longest caption
    target = torch.zeros(2, steps + 1, dtype=torch.long)  # eos and padding are both id 0, as the release's
    for row, seq in enumerate(ids):
        target[row, : len(seq) + 1] = torch.tensor([tok.bos_id, *seq])
    model = seeded(model_cls(tok.vocab_size, steps + 1, opts.caption_lstm_dim_hidden, opts.caption_lstm_dim_word,
                             dim_vid, rnn_cell=opts.caption_lstm_cell_type, n_layers=opts.caption_lstm_num_layers,
                             rnn_dropout_p=opts.caption_lstm_dropout))
    with torch.no_grad():
        log_probs, _ = model(feats, target, "train")
        _, greedy = model(feats, mode="inference")
    return {"built_with": built_with, "keys": keys(model), "input": list(feats.shape), "token_ids": ids,
            "log_probs": rounded(log_probs), "greedy": greedy.tolist()}


def main() -> None:
    import opts
    from models.C3DAVG.C3D_altered import C3D_altered
    from models.C3DAVG.dive_classifier import dive_classifier
    from models.C3DAVG.my_fc6 import my_fc6
    from models.C3DAVG.S2VTModel import S2VTModel as S2VTC3D
    from models.C3DAVG.score_regressor import score_regressor
    from models.MSCADC.body import C3D_dilated_body
    from models.MSCADC.head_captions import S2VTModel as S2VTMSCADC
    from models.MSCADC.head_dive_classifier import C3D_dilated_head_classifier
    from models.MSCADC.head_fs_2 import C3D_dilated_head_fs
    from test_paper_exact import RELEASE_FRAMES, release_input

    torch.set_num_threads(1)
    caption_args = {"rnn_cell": opts.caption_lstm_cell_type, "n_layers": opts.caption_lstm_num_layers,
                    "rnn_dropout_p": opts.caption_lstm_dropout}
    dims = (opts.vocab_size, opts.max_cap_len, opts.caption_lstm_dim_hidden, opts.caption_lstm_dim_word)
    s2vt = "S2VTModel(vocab_size, max_cap_len, 512, 512, {}, rnn_cell='gru', n_layers=2, rnn_dropout_p=0.5)"
    built = {
        "C3D_altered": (C3D_altered(), "C3D_altered() (models/C3DAVG/C3D_altered.py)"),
        "my_fc6": (my_fc6(), "my_fc6() (models/C3DAVG/my_fc6.py)"),
        "score_regressor": (score_regressor(), "score_regressor() (models/C3DAVG/score_regressor.py)"),
        "dive_classifier": (dive_classifier(), "dive_classifier() (models/C3DAVG/dive_classifier.py)"),
        "S2VTModel (C3D-AVG)": (S2VTC3D(*dims, 8192, **caption_args),
                                s2vt.format(8192) + " (models/C3DAVG/S2VTModel.py; train_test_C3DAVG.py:284-287)"),
        "C3D_dilated_body": (C3D_dilated_body(), "C3D_dilated_body() (models/MSCADC/body.py)"),
        "C3D_dilated_head_fs": (C3D_dilated_head_fs(), "C3D_dilated_head_fs() (models/MSCADC/head_fs_2.py)"),
        "C3D_dilated_head_classifier": (C3D_dilated_head_classifier(),
                                        "C3D_dilated_head_classifier() (models/MSCADC/head_dive_classifier.py)"),
        "S2VTModel (MSCADC)": (S2VTMSCADC(*dims, opts.caption_lstm_dim_vid, **caption_args),
                               s2vt.format(1200) + " (models/MSCADC/head_captions.py; train_test_MSCADC.py:265-268)"),
    }
    modules = {name: {"built_with": text, "keys": keys(model)} for name, (model, text) in built.items()}

    outputs: dict[str, Any] = {}
    feats = release_input("c3d_clip_features", (2, 6, 8192))
    outputs["S2VTModel (C3D-AVG)"] = caption_outputs(S2VTC3D, 8192, feats, s2vt.format(8192).replace(
        "vocab_size, max_cap_len", "len(word vocabulary of CAPTIONS), teacher-forcing steps + 1"))
    fmap = release_input("mscadc_map", (2, 256, 2, 20, 20))
    outputs["mscadc_map_input"] = list(fmap.shape)
    with torch.no_grad():
        outputs["C3D_dilated_head_fs"] = rounded(seeded(built["C3D_dilated_head_fs"][0])(fmap))
        logits = seeded(built["C3D_dilated_head_classifier"][0])(fmap)
    outputs["C3D_dilated_head_classifier"] = {
        field: rounded(t) for field, t in zip(("position", "armstand", "rot_type", "ss_no", "tw_no"), logits)}
    outputs["S2VTModel (MSCADC)"] = caption_outputs(S2VTMSCADC, 1200, fmap, s2vt.format(1200).replace(
        "vocab_size, max_cap_len", "len(word vocabulary of CAPTIONS), teacher-forcing steps + 1"))
    video = release_input("mscadc_video", (1, 3, 103, 48, 48))
    frames = [int(i) for i in np.arange(0, 103, 6.5)]  # dataloader_MSCADC.py:112, the window starting at 0
    assert frames == RELEASE_FRAMES
    with torch.no_grad():
        out = seeded(built["C3D_dilated_body"][0])(video[:, :, frames])
    outputs["C3D_dilated_body"] = {"frame_size": [48, 48], "input": list(video.shape), "frames": frames,
                                   "shape": list(out.shape), "channel_means": rounded(out.mean(dim=(0, 2, 3, 4))),
                                   "position_means": rounded(out.mean(dim=(0, 1)).flatten())}

    import models.MSCADC.body as body_module

    data = {"source": f"ParitoshParmar/MTL-AQA@{commit_of(body_module)}", "torch": torch.__version__.split("+")[0],
            "modules": modules, "outputs": outputs}
    (HERE / "mtl_aqa_release_reference.json").write_text(dump(data) + "\n", encoding="utf-8")


if __name__ == "__main__":
    torch.Tensor.cuda = lambda self, *args, **kwargs: self  # the release's forward calls .cuda()
    main()
