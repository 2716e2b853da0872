"""The skating plugin: contract checks, the scoring rules, the protocol sheet, the renders, training."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import aqakit_plugin_skating
from aqakit.errors import AqakitError
from aqakit.interfaces import Representation
from aqakit.testing import check_recipe, contract_tests
from aqakit_plugin_skating.dataset import read_protocol
from aqakit_plugin_skating.head import JumpElementHead
from aqakit_plugin_skating.protocol import base_value, element_score, panel_goe, parse_element
from aqakit_plugin_skating.render import render_jump

RECIPE = Path(aqakit_plugin_skating.__file__).parent / "skating.yaml"

test_contracts = contract_tests(aqakit_plugin_skating, distribution="aqakit-plugin-skating")


def test_scoring_rules():
    assert parse_element("3Lz<") == (4, 3, True) and parse_element("2A") == (5, 2, False)
    assert base_value(4, 3, True) == pytest.approx(4.72)  # 5.90 x 0.8
    assert panel_goe([3, 2, 2, 1, 5, -1, 2, 2, 2]) == pytest.approx(2.0)  # drop the 5 and the -1
    assert element_score(5.90, 2.0) == pytest.approx(7.08)
    with pytest.raises(AqakitError, match="element code '5T'"):
        parse_element("5T")


def test_protocol_sheet_errors_name_the_line(tmp_path):
    sheet = tmp_path / "protocol.csv"
    sheet.write_text("clip,element,j1,j2,j3\na.mp4,3T,1,2,3\nb.mp4,3X,0,0,0\n")
    with pytest.raises(AqakitError, match="line 3: element code '3X'"):
        read_protocol(sheet)
    sheet.write_text("clip,element,j1,j2\na.mp4,3T,1,2\n")
    with pytest.raises(AqakitError, match="three or more judge columns"):
        read_protocol(sheet)
    sheet.write_text("clip,element,j1,j2,j3\na.mp4,2F<,1,9,0\n")
    with pytest.raises(AqakitError, match="line 2: judges' grades"):
        read_protocol(sheet)


def test_renders_are_deterministic_and_show_the_jump():
    a = render_jump(4, 3, False, 0.5, seed=1)
    assert a.dtype == torch.uint8 and a.shape == (3, 16, 32, 32)
    assert torch.equal(a, render_jump(4, 3, False, 0.5, seed=1))
    assert not torch.equal(a, render_jump(4, 3, True, 0.5, seed=1))   # the under-rotation is visible
    assert not torch.equal(a, render_jump(0, 3, False, 0.5, seed=1))  # so is the take-off


def test_head_scores_by_the_rules():
    head = JumpElementHead(in_dim=4)
    out = {"jump": torch.tensor([[0.0, 0, 0, 0, 9, 0]]), "rotations": torch.tensor([[0.0, 0, 9, 0]]),
           "under_rotated": torch.tensor([3.0]), "goe": torch.tensor([2.0])}
    decoded = head.decoded(out)
    assert float(decoded["score"][0]) == pytest.approx(4.72 * 1.2)
    assert head.describe(out)[0]["element"] == "3Lz<"
    assert head(Representation(pooled=torch.zeros(2, 4)))["goe"].shape == (2,)


def test_recipe_trains(aqakit_plugins, register_plugin, tmp_path):
    register_plugin(aqakit_plugin_skating, distribution="aqakit-plugin-skating")
    summary = check_recipe(RECIPE, "train.epochs=1", "data.dataset.n=20", run_dir=tmp_path / "run")
    assert {"element.acc_jump", "element.acc_under_rotated"} <= set(summary["test"])
