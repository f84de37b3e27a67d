"""Quantized layers: the fused single operation equals the M·N binary operations."""

import pytest
import torch
from torch import nn

from abc_lab.quant import ABCConv2d, ABCLinear, QuantConfig, QuantConv2d, QuantLinear


def _clone_inputs(x):
    return x.detach().clone().requires_grad_(True)


def _grads(layer, x, fn, g):
    layer.zero_grad()
    x = _clone_inputs(x)
    out = fn(x)
    out.backward(g)
    grads = {n: p.grad.detach().clone() for n, p in layer.named_parameters() if p.grad is not None}
    return out.detach(), x.grad.detach(), grads


def _assert_fused_equals_reference(layer, x):
    torch.manual_seed(1)
    g = torch.randn_like(layer(x))
    out_f, gx_f, gp_f = _grads(layer, x, layer, g)
    out_r, gx_r, gp_r = _grads(layer, x, layer.forward_reference, g)
    scale = out_r.abs().max().clamp_min(1.0)
    assert torch.allclose(out_f, out_r, atol=2e-5 * scale, rtol=1e-5)
    assert torch.allclose(gx_f, gx_r, atol=2e-5 * gx_r.abs().max().clamp_min(1.0))
    assert gp_f.keys() == gp_r.keys()
    for name in gp_f:
        tol = 2e-5 * gp_r[name].abs().max().clamp_min(1.0)
        assert torch.allclose(gp_f[name], gp_r[name], atol=tol), name


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("padding", [0, 1])
@pytest.mark.parametrize("kernel", [1, 3])
@pytest.mark.parametrize("scope", ["layer", "channel"])
@pytest.mark.parametrize("MN", [(1, 1), (3, 3), (2, 5), (3, 0)])
def test_abc_conv_fused_equals_reference(stride, padding, kernel, scope, MN):
    torch.manual_seed(0)
    M, N = MN
    layer = ABCConv2d(5, 6, kernel, stride=stride, padding=padding, bias=True, M=M, N=N,
                      alpha_scope=scope)  # fmt: skip
    x = torch.randn(2, 5, 9, 7)  # non-square
    _assert_fused_equals_reference(layer, x)


def test_abc_conv_grouped_and_trainable_shifts_agree():
    torch.manual_seed(0)
    layer = ABCConv2d(4, 6, 3, padding=1, groups=2, M=3, N=2, trainable_shifts=True)
    _assert_fused_equals_reference(layer, torch.randn(2, 4, 6, 5))


@pytest.mark.parametrize("MN", [(1, 1), (3, 3), (5, 5), (4, 0)])
@pytest.mark.parametrize("scope", ["layer", "channel"])
def test_abc_linear_fused_equals_reference(MN, scope):
    torch.manual_seed(0)
    layer = ABCLinear(12, 7, M=MN[0], N=MN[1], alpha_scope=scope)
    _assert_fused_equals_reference(layer, torch.randn(4, 12))


@pytest.mark.parametrize("name", ["bnn", "bnn:fan_in", "bwn", "xnor"])
def test_baselines_fused_equal_reference(name):
    torch.manual_seed(0)
    name, _, scale = name.partition(":")
    kernel, inp = QuantConfig(name=name, bnn_scale=scale or "none").make()
    layer = QuantConv2d(3, 4, 3, padding=1, kernel_quantizer=kernel, input_quantizer=inp)
    _assert_fused_equals_reference(layer, torch.randn(2, 3, 6, 6) * 0.8)


def test_baseline_quantizers_do_what_their_papers_say():
    torch.manual_seed(0)
    W = torch.randn(4, 3, 3, 3)
    bnn_k, bnn_i = QuantConfig(name="bnn").make()
    assert torch.equal(bnn_k(W), torch.where(W >= 0, 1.0, -1.0))  # no scale
    fan_in = QuantConfig(name="bnn", bnn_scale="fan_in")
    assert fan_in.label() == "bnn(fan_in)" and "bnn_scale" in fan_in.used_fields()
    scaled_k, _ = fan_in.make()  # one constant per layer: 1/√(3·3·3)
    assert torch.equal(scaled_k(W), torch.where(W >= 0, 1.0, -1.0) * (1 / 27**0.5))
    B, alpha = scaled_k.decompose(W)
    assert torch.equal(B[0], torch.where(W >= 0, 1.0, -1.0))
    assert alpha.tolist() == pytest.approx([1 / 27**0.5])
    V = (3 * W).requires_grad_(True)
    scaled_k(V).sum().backward()  # straight through inside |W| ≤ 1, times the constant
    assert torch.allclose(V.grad, torch.where(V.detach().abs() <= 1, 1 / 27**0.5, 0.0))
    with pytest.raises(ValueError, match="bnn_scale must be one of"):
        QuantConfig(name="bnn", bnn_scale="channel")
    bwn_k, bwn_i = QuantConfig(name="bwn").make()
    assert bwn_i is None  # float activations
    expected = torch.where(W >= 0, 1.0, -1.0) * W.abs().mean(dim=(1, 2, 3), keepdim=True)
    assert torch.allclose(bwn_k(W), expected)
    xnor_k, xnor_i = QuantConfig(name="xnor").make()
    x = torch.randn(10)
    assert torch.equal(xnor_i(x), torch.where(x >= 0, 1.0, -1.0))
    assert torch.allclose(xnor_k(W), expected)


def test_layers_are_drop_in_replacements():
    torch.manual_seed(0)
    conv = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
    q = QuantConv2d(3, 8, 3, stride=2, padding=1, bias=False)  # no quantizer: plain conv
    q.load_state_dict(conv.state_dict())
    x = torch.randn(2, 3, 10, 10)
    assert torch.equal(conv(x), q(x))
    lin = nn.Linear(6, 3)
    ql = QuantLinear(6, 3)
    ql.load_state_dict(lin.state_dict())
    x = torch.randn(2, 6)
    assert torch.equal(lin(x), ql(x))
    abc = ABCConv2d(3, 8, 3, stride=2, padding=1, bias=False, M=2, N=2)
    assert abc.weight.shape == conv.weight.shape and abc(torch.randn(1, 3, 10, 10)).shape == (
        1, 8, 5, 5,
    )  # fmt: skip


def test_weights_shifts_and_scales_all_receive_gradients():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8),
        ABCConv2d(8, 8, 3, padding=1, M=3, N=3), nn.ReLU(), nn.BatchNorm2d(8),
        ABCConv2d(8, 8, 3, padding=1, M=3, N=3, trainable_shifts=True),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.BatchNorm1d(8), ABCLinear(8, 4, M=2, N=2),
    )  # fmt: skip
    x = torch.randn(8, 1, 8, 8)
    nn.functional.cross_entropy(net(x), torch.randint(0, 4, (8,))).backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    names = {n for n, _ in net.named_parameters()}
    assert {"2.input_quantizer.v", "2.input_quantizer.beta", "5.kernel_quantizer.shifts"} <= names


def test_activation_bases_differ_at_init_and_after_training_steps():
    torch.manual_seed(0)
    layer = ABCConv2d(4, 4, 3, padding=1, M=1, N=3)
    opt = torch.optim.SGD(layer.parameters(), lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        layer(torch.randn(4, 4, 6, 6)).pow(2).mean().backward()
        opt.step()
    v = layer.input_quantizer.v.detach()
    assert len(set(v.tolist())) == 3
    A, _ = layer.input_quantizer.decompose(torch.linspace(-2, 2, 101))
    assert not torch.equal(A[0], A[1]) and not torch.equal(A[1], A[2])


@pytest.mark.parametrize(
    "kwargs, arg",
    [
        ({"M": 0}, "M"),
        ({"M": -2}, "M"),
        ({"M": 2.5}, "M"),
        ({"N": -1}, "N"),
        ({"N": 1.5}, "N"),
        ({"M": 3, "shifts": [0.0, 1.0]}, "shifts"),
        ({"alpha_scope": "pixel"}, "alpha_scope"),
    ],
)
def test_bad_arguments_raise_value_error_naming_the_argument(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        ABCConv2d(3, 3, 3, **kwargs)
    with pytest.raises(ValueError, match=arg):
        ABCLinear(3, 3, **kwargs)
    with pytest.raises(ValueError, match=arg):
        QuantConfig(name="abc", **kwargs)


def test_unknown_quantizer_name_lists_the_choices():
    choices = "abc, abc_act_only, bnn, bwn, fp, sign_act_only, xnor"
    with pytest.raises(ValueError, match=f"unknown quantizer 'ternary'.*{choices}"):
        QuantConfig(name="ternary")
