"""Regenerate the i3d_inception reference data in this folder from the reference classes themselves.

Writes ``i3d_inception_keys.json`` (piergiaj/pytorch-i3d's ``InceptionI3d`` state-dict keys and shapes),
``i3d_inception_keys_kinetics_i3d_pytorch.json`` (CoRe's copy of kinetics_i3d_pytorch's ``I3D``) and
``i3d_inception_reference_features.json`` (both classes' features for ``seeded_state`` weights). The
references are checked out outside this repository; their code is never part of aqakit:

    git clone https://github.com/piergiaj/pytorch-i3d ../pytorch-i3d
    git clone https://github.com/yuxumin/CoRe ../CoRe
    PYTHONPATH=../pytorch-i3d:../CoRe:tests python tests/data/make_i3d_inception_reference.py
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
CORE_LAYERS = ("conv3d_1a_7x7", "maxPool3d_2a_3x3", "conv3d_2b_1x1", "conv3d_2c_3x3", "maxPool3d_3a_3x3",
               "mixed_3b", "mixed_3c", "maxPool3d_4a_3x3", "mixed_4b", "mixed_4c", "mixed_4d", "mixed_4e",
               "mixed_4f", "maxPool3d_5a_2x2", "mixed_5b", "mixed_5c")


def commit_of(module: object) -> str:
    """The git commit of the checkout a module was imported from ("unknown" outside git)."""
    folder = Path(module.__file__).resolve().parent
    result = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=False)
    return result.stdout.strip() or "unknown"


def write_keys(path: Path, source: str, built_with: str, model: torch.nn.Module) -> dict[str, list[int]]:
    """One key per line: ``{"source", "built_with", "torch", "keys": {key: shape}}``."""
    keys = {k: list(v.shape) for k, v in model.state_dict().items()}
    head = [f'  "source": {json.dumps(source)},', f'  "built_with": {json.dumps(built_with)},',
            f'  "torch": {json.dumps(torch.__version__.split("+")[0])},', '  "keys": {']
    rows = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in keys.items()]
    path.write_text("\n".join(["{", *head, ",\n".join(rows), "  }", "}"]) + "\n", encoding="utf-8")
    return keys


def features_entry(source: str, shape: list[int], features: torch.Tensor, **extra: object) -> list[str]:
    values = ", ".join(f"{v:.9g}" for v in features.tolist())
    lines = [f'    "source": {json.dumps(source)},', f'    "input": {json.dumps(shape)},']
    lines += [f'    "{k}": {json.dumps(v)},' for k, v in extra.items()]
    return [*lines, f'    "features": [{values}]']


def main() -> None:
    import pytorch_i3d
    from models import i3d as core_i3d
    from test_i3d_inception import reference_input, seeded_state

    from aqakit_modern.inception_i3d import from_hassony2

    torch.set_num_threads(1)
    piergiaj = f"piergiaj/pytorch-i3d@{commit_of(pytorch_i3d)}"
    core = f"yuxumin/CoRe@{commit_of(core_i3d)}"
    ref = pytorch_i3d.InceptionI3d(num_classes=400, in_channels=3)
    keys = write_keys(HERE / "i3d_inception_keys.json", f"{piergiaj} pytorch_i3d.py",
                      "InceptionI3d(num_classes=400, in_channels=3).state_dict()", ref)
    other = core_i3d.I3D(num_classes=400, modality="rgb")
    other_keys = write_keys(HERE / "i3d_inception_keys_kinetics_i3d_pytorch.json",
                            f"{core} models/i3d.py (hassony2/kinetics_i3d_pytorch, model_rgb.pth)",
                            "I3D(num_classes=400, modality='rgb').state_dict()", other)

    ref.load_state_dict(seeded_state(keys))
    ref.eval()
    x = reference_input([1, 3, 9, 37, 37])
    with torch.no_grad():
        for name in ref.VALID_ENDPOINTS:  # the endpoints without the fixed-size AvgPool3d
            if name in ref.end_points:
                x = ref._modules[name](x)
    first = features_entry(f"{piergiaj} InceptionI3d", [1, 3, 9, 37, 37], x.mean(dim=(2, 3, 4))[0])

    to_other = {from_hassony2(k): k for k in other_keys}
    other.load_state_dict({to_other[k]: v for k, v in seeded_state(keys).items()})
    x = reference_input([1, 3, 8, 32, 32])
    with torch.no_grad():
        for name in CORE_LAYERS:
            x = getattr(other.eval(), name)(x)
    second = features_entry(f"{core} models/i3d.py I3D", [1, 3, 8, 32, 32], x.mean(dim=(2, 3, 4))[0], bn_eps=1e-5)
    about = ("features (Mixed_5c averaged over time and space) of the reference classes, eval mode, with "
             "seeded_state(manifest keys, seed=0) weights on reference_input(shape, seed=1); computed in a "
             "scratch folder by instantiating the classes of the fetched repositories")
    lines = ["{", f'  "about": {json.dumps(about)},', '  "pytorch_i3d": {', *first, "  },",
             '  "kinetics_i3d_pytorch": {', *second, "  }", "}"]
    (HERE / "i3d_inception_reference_features.json").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
