"""Model conversion and model summary."""

import io

import pytest
import torch
from torch import nn

from abc_lab.quant import QuantConfig, QuantConv2d, QuantLinear, quantize_model, summarize


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.BatchNorm2d(8), nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.ReLU(),
        nn.BatchNorm2d(16), nn.Conv2d(16, 16, 3, padding=1, bias=False), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10),
    )  # fmt: skip


def test_first_and_last_layers_stay_full_precision_by_default():
    model = quantize_model(_net(), QuantConfig(name="abc", M=3, N=3))
    assert type(model[0]) is nn.Conv2d and type(model[11]) is nn.Linear
    assert isinstance(model[4], QuantConv2d) and isinstance(model[7], QuantConv2d)
    assert model[4].kernel_quantizer.M == 3 and model[4].input_quantizer.N == 3


def test_keep_first_last_false_and_keep_fp_patterns():
    model = quantize_model(_net(), {"name": "xnor", "keep_first": False, "keep_last": False})
    assert isinstance(model[0], QuantConv2d) and isinstance(model[11], QuantLinear)
    model = quantize_model(_net(), QuantConfig(name="bnn", keep_fp=["7"]))
    assert type(model[7]) is nn.Conv2d and isinstance(model[4], QuantConv2d)


def test_fp_leaves_the_model_untouched_and_weights_are_copied():
    ref = _net()
    assert all(type(m) is type(r) for m, r in zip(quantize_model(_net(), "fp"), ref, strict=True))
    model = quantize_model(_net(), "abc")
    assert torch.equal(model[4].weight, ref[4].weight)


def test_converting_twice_is_refused():
    model = quantize_model(_net(), "abc")
    with pytest.raises(ValueError, match="already quantized"):
        quantize_model(model, "abc")


@pytest.mark.parametrize("name", ["bnn", "bwn", "xnor", "abc"])
def test_state_dict_round_trips(name):
    cfg = QuantConfig(name=name, M=3, N=2, trainable_shifts=True)
    model = quantize_model(_net(), cfg)
    x = torch.randn(3, 1, 12, 12)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)  # move v, β, u away from their init
    model(x).sum().backward()
    opt.step()
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    buf.seek(0)
    other = quantize_model(_net(), cfg)
    other.load_state_dict(torch.load(buf, weights_only=True))
    model.eval()
    other.eval()
    assert torch.equal(model(x), other(x))


def test_full_precision_checkpoint_initialises_a_binary_model():
    fp = _net()
    binary = quantize_model(_net(), "abc")
    missing, unexpected = binary.load_state_dict(fp.state_dict(), strict=False)
    assert not unexpected
    assert all("quantizer" in k for k in missing)
    assert torch.equal(binary[4].weight, fp[4].weight)


def test_summary_counts_bits_memory_and_macs():
    fp = summarize(_net(), (1, 12, 12))
    t = fp.totals()
    assert t["binary_macs"] == 0 and t["binarized_mac_ratio"] == 0
    assert t["compression"] == pytest.approx(1.0)
    # conv 8->16, 3x3, stride 2 on 12x12: 6x6x16 outputs x 72 MACs each
    layer = next(layer for layer in fp.layers if layer.name == "4")
    assert layer.macs == 6 * 6 * 16 * 8 * 9
    assert t["params"] == sum(p.numel() for p in _net().parameters())

    abc = summarize(quantize_model(_net(), QuantConfig(name="abc", M=3, N=2)), (1, 12, 12))
    t = abc.totals()
    q = next(layer for layer in abc.layers if layer.name == "4")
    assert (q.weight_bits, q.input_bits) == (3, 2)
    assert q.binary_ops == q.macs * 3 * 2
    # packed: 3 bits per weight + 3 float alphas + N=2 floats each for v and beta
    assert q.params == 16 * 8 * 9 + 2 + 2
    assert q.packed_bytes == (16 * 8 * 9 * 3 + 32 * (3 + 4) + 7) // 8
    assert t["binary_macs"] == 6 * 6 * 16 * 72 + 6 * 6 * 16 * 144
    assert t["binary_macs"] + t["float_macs"] == fp.totals()["macs"]
    assert 1.0 < t["compression"] < 32 / 3
    wo = summarize(quantize_model(_net(), QuantConfig(name="abc", M=3, N=0)), (1, 12, 12))
    assert wo.totals()["binary_macs"] == 0  # binary weights but float inputs
    table = abc.rich_table()
    assert table.row_count == len(abc.layers)


def test_reference_mode_switches_every_quantized_layer():
    from abc_lab.quant import set_reference_mode

    model = quantize_model(_net(), QuantConfig(name="abc", M=2, N=2)).eval()
    x = torch.randn(2, 1, 12, 12)
    fused = model(x)
    assert set_reference_mode(model, True) == 2
    assert torch.allclose(model(x), fused, atol=1e-4)
    assert model[4].reference and model[7].reference
