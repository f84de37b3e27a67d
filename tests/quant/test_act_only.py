"""Activation-only quantizers (stage 1 of two-stage training): binary activations, float
weights, registered like every other quantizer."""

from __future__ import annotations

import pytest
import torch

from abc_lab.models import build_model
from abc_lab.quant import ABCInput, QuantConfig, QuantConv2d, SignInput, quantize_model

SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}


@pytest.mark.parametrize(
    "name, label, inputs, fields",
    [
        ("abc_act_only", "abc(fp,2)", ABCInput,
         {"N", "act_shift_center", "act_shift_spread", "beta_init", "act_calibration"}),
        ("sign_act_only", "sign(fp,1)", SignInput, set()),
    ],
)  # fmt: skip
def test_activation_only_quantizers(name, label, inputs, fields):
    q = QuantConfig(name=name, M=5, N=2)
    identity = q.identity()
    assert identity["label"] == label and identity["family"] == name
    bases = 2 if name == "abc_act_only" else 1
    assert identity["weight_bases"] == 0 and identity["activation_bases"] == bases
    used = set(q.used_fields())
    assert used == {"keep_first", "keep_last", "keep_fp", *fields}
    assert "M" not in used  # float weights: M cannot change such a run
    torch.manual_seed(0)
    model = quantize_model(build_model(**SPEC), q)
    conv = model.get_submodule("layer1.0.conv1")
    assert isinstance(conv, QuantConv2d) and conv.kernel_quantizer is None
    assert isinstance(conv.input_quantizer, inputs)
    x = torch.randn(4, 16, 28, 28)
    w = conv.weight.detach().clone()
    assert torch.equal(conv.quantized_weight(), conv.weight)  # the weights stay float
    assert torch.allclose(conv(x), conv.forward_reference(x), atol=1e-5)
    assert torch.equal(conv.weight, w)
    model(torch.randn(2, 1, 28, 28)).sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


def test_abc_act_only_needs_activation_bases():
    with pytest.raises(ValueError, match="abc_act_only binarises activations with N >= 1"):
        QuantConfig(name="abc_act_only", N=0)
