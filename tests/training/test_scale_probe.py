"""The probe behind README's "bnn's scale": unscaled bnn layers blow up the activations of a
network started from float weights; dividing by sqrt(fan_in) keeps them at xnor's size."""

from __future__ import annotations

import pytest
import torch

from abc_lab.models import build_model
from abc_lab.quant import parse_quant_spec, quantize_model
from abc_lab.training.scale_probe import stage_stds


def test_quantizer_names_parse_into_configs() -> None:
    assert parse_quant_spec("bnn:fan_in").bnn_scale == "fan_in"
    assert parse_quant_spec("bnn").bnn_scale == "none"
    abc = parse_quant_spec("abc:5:3")
    assert (abc.name, abc.M, abc.N) == ("abc", 5, 3)
    with pytest.raises(ValueError, match="xnor takes no base counts"):
        parse_quant_spec("xnor:3")
    with pytest.raises(ValueError, match="bnn_scale must be one of"):
        parse_quant_spec("bnn:channel")


def test_unscaled_bnn_activations_grow_with_fan_in_and_fan_in_scale_removes_it() -> None:
    torch.manual_seed(0)
    spec = dict(name="resnet20", num_classes=10, in_channels=1, input_size=28)
    state = build_model(**spec).state_dict()  # one set of float weights for all
    x = torch.randn(32, 1, 28, 28)
    stds = {}
    for text in ("fp", "bnn", "bnn:fan_in", "xnor"):
        model = quantize_model(build_model(**spec), parse_quant_spec(text))
        model.load_state_dict(state, strict=False)
        running = [b.running_mean.clone() for b in model.modules() if hasattr(b, "running_mean")]
        stds[text] = stage_stds(model, x)
        after = [b.running_mean for b in model.modules() if hasattr(b, "running_mean")]
        assert all(torch.equal(a, b) for a, b in zip(running, after, strict=True))
    (bnn, bnn_logits), (scaled, _), (xnor, _) = stds["bnn"], stds["bnn:fan_in"], stds["xnor"]
    assert len(bnn) == 3 and all(b > 5 * s for b, s in zip(bnn, scaled, strict=True))
    assert all(0.5 < s / x < 2 for s, x in zip(scaled, xnor, strict=True))
    assert bnn_logits > 5 * stds["fp"][1]
