"""The probe behind the recipe study's "how far the binary weights moved": sign changes about
the layer mean and the median move, in units of the start layer's std, of binarised layers."""

from __future__ import annotations

import pytest
import torch

from abc_lab.models import build_model
from abc_lab.quant import parse_quant_spec, quantize_model
from abc_lab.training.weight_drift import binarised_layers, drift


def test_only_binarised_layers_are_compared() -> None:
    spec = dict(name="resnet20", num_classes=10, in_channels=1, input_size=28)
    names = binarised_layers(quantize_model(build_model(**spec), parse_quant_spec("abc:3:3")))
    # stem, classifier and the float shortcuts stay float; the 18 block convolutions are binary
    assert len(names) == 18 and all(n.startswith("layer") and "downsample" not in n for n in names)
    assert binarised_layers(quantize_model(build_model(**spec), parse_quant_spec("fp"))) == []


def test_drift_counts_sign_changes_about_the_mean_and_the_median_move() -> None:
    torch.manual_seed(0)
    w0 = torch.randn(8, 4, 3, 3)
    std = float(w0.double().std())
    same = drift({"a.weight": w0}, {"a.weight": w0.clone()}, ["a"])
    assert (same.layers, same.weights, same.flipped, same.median_move) == (1, w0.numel(), 0, 0)
    # negate a quarter of the weights (mean is ~0, so their sign about the mean flips) and
    # shift the rest by a tenth of the std, which flips only weights within it of the mean
    w1 = w0.clone().flatten()
    k = w1.numel() // 4
    w1[:k] = -w1[:k]
    w1[k:] += 0.1 * std
    moved = drift({"a.weight": w0}, {"a.weight": w1.view_as(w0)}, ["a"])
    centred0 = (w0.flatten() - w0.mean()).double()
    centred1 = (w1 - w1.mean()).double()
    expected = float((torch.sign(centred0) != torch.sign(centred1)).double().mean())
    assert moved.flipped == pytest.approx(expected)
    assert 0.25 <= moved.flipped < 0.35
    assert moved.median_move == pytest.approx(0.1, rel=1e-6)  # 3/4 of the moves are 0.1·std


def test_drift_rejects_nothing_to_compare_and_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="no binarised layers"):
        drift({}, {}, [])
    with pytest.raises(ValueError, match="shape"):
        drift({"a.weight": torch.ones(2, 2)}, {"a.weight": torch.ones(3, 2)}, ["a"])


def test_a_run_that_did_not_start_from_another_is_an_error(tmp_path, capsys) -> None:
    from abc_lab.training.weight_drift import main

    (tmp_path / "config.yaml").write_text("init_from: null\n")
    assert main([str(tmp_path)]) == 1
    assert "did not start from another run" in capsys.readouterr().err
