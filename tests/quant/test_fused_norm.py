"""BatchNorm fused with the binarised input (quant/fused_norm.py, csrc/bn_binarize.cpp)
against the separate operations: values, gradients, running statistics, fallbacks."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from abc_lab.models import build_model
from abc_lab.quant import QuantConfig, fused_norm, quantize_model
from abc_lab.quant import functional as QF
from abc_lab.quant.layers import QuantConv2d
from abc_lab.quant.quantizers import ABCInput, SignInput


@pytest.fixture
def fused_kernels():
    """The "auto" kernel setting with the C++ kernels built (skips where no compiler works)."""
    previous = QF.kernel_name()
    QF.set_kernel("auto")
    try:
        if fused_norm.kernels() is None:
            pytest.skip(f"no C++ toolchain here: {fused_norm._state['error']}")
        yield
    finally:
        QF.set_kernel(previous)


def _quantizer(kind: str) -> nn.Module:
    if kind == "sign":
        return SignInput()
    q = ABCInput(N=int(kind[3:]))
    with torch.no_grad():  # trained-looking v and β, not the symmetric start
        q.v.add_(torch.linspace(-0.2, 0.3, q.N))
        q.beta.mul_(torch.linspace(0.7, 1.4, q.N))
    return q


def _norm(channels: int, affine: bool = True, momentum: float | None = 0.1) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels, affine=affine, momentum=momentum)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.3, 0.3)
    bn.running_mean.uniform_(-0.1, 0.1)
    bn.running_var.uniform_(0.9, 1.1)
    return bn


def _run(bn, q, x, g, fused: bool):
    """Output, gradients of (x, BN's γ, b, the quantizer's v, β) and BN's buffers after a
    training forward and backward, fused or as the separate operations."""
    bn, q = copy.deepcopy(bn), copy.deepcopy(q)
    x = x.clone().requires_grad_()
    assert fused_norm.applies(bn, q, x) == fused or not fused
    out = fused_norm.norm_binarize(bn, q, x) if fused else q(bn(x))
    out.backward(g)
    params = [x, *(p for p in (bn.weight, bn.bias) if p is not None), *q.parameters()]
    return out.detach(), [p.grad for p in params], [b.clone() for b in bn.buffers()]


def _near_threshold(bn, q, x) -> torch.Tensor:
    """Elements whose BatchNorm output lies within float rounding of a base's threshold or
    window edge, where the two paths' statistics (summed in different orders) may differ."""
    with torch.no_grad():
        y = F.batch_norm(x, None, None, bn.weight, bn.bias, True, 0.0, bn.eps)
        if isinstance(q, ABCInput):
            edges = torch.cat(QF.activation_edges(q.v.detach()))
        else:
            edges = torch.tensor([-1.0, 0.0, 1.0])
        return ((y.unsqueeze(-1) - edges).abs() < 1e-4).any(-1)


@pytest.mark.parametrize("kind", ["sign", "abc1", "abc3", "abc5", "abc8"])
@pytest.mark.parametrize("affine", [True, False])
def test_fused_matches_separate_operations(fused_kernels, kind, affine):
    torch.manual_seed(0)
    bn, q = _norm(6, affine), _quantizer(kind)
    x = torch.randn(5, 6, 9, 11) * 1.7 + 0.4  # plane of 99 values: vector body and tail
    g = torch.randn_like(x)
    out, grads, buffers = _run(bn, q, x, g, fused=True)
    ref_out, ref_grads, ref_buffers = _run(bn, q, x, g, fused=False)

    near = _near_threshold(bn, q, x)
    assert near.float().mean() < 0.01
    assert torch.equal(out[~near], ref_out[~near])
    for got, want in zip(grads, ref_grads, strict=True):
        # a value that crosses a threshold in one path moves a window sum by one element
        assert torch.allclose(got, want, rtol=1e-3, atol=1e-3 * want.abs().max()), (got, want)
    for got, want in zip(buffers, ref_buffers, strict=True):
        assert torch.allclose(got.float(), want.float(), rtol=1e-5, atol=1e-6)


def test_statistics_and_gradients_agree_bit_for_bit_away_from_thresholds(fused_kernels):
    """With no value near a threshold, the output is identical and every gradient agrees
    to float rounding (the sums run in float64 here, in float32 in PyTorch)."""
    torch.manual_seed(1)
    bn, q = _norm(4), _quantizer("abc3")
    x = torch.randn(8, 4, 16, 16)
    for _ in range(20):  # move values near an edge far away, until the statistics settle
        near = _near_threshold(bn, q, x)
        if not near.any():
            break
        x[near] = 4.0
    g = torch.randn_like(x)
    out, grads, _ = _run(bn, q, x, g, fused=True)
    ref_out, ref_grads, _ = _run(bn, q, x, g, fused=False)
    assert not _near_threshold(bn, q, x).any()
    assert torch.equal(out, ref_out)
    for got, want in zip(grads, ref_grads, strict=True):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5 * want.abs().max())


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_statistics_follow_batchnorm_over_several_steps(fused_kernels, momentum):
    torch.manual_seed(2)
    bn, q = _norm(3, momentum=momentum), _quantizer("abc3")
    fused, ref = copy.deepcopy(bn), copy.deepcopy(bn)
    for _ in range(3):
        x = torch.randn(4, 3, 7, 7) * 2 + 1
        fused_norm.norm_binarize(fused, q, x)
        q(ref(x))
    assert int(fused.num_batches_tracked) == int(ref.num_batches_tracked) == 3
    assert torch.allclose(fused.running_mean, ref.running_mean, rtol=1e-5, atol=1e-6)
    assert torch.allclose(fused.running_var, ref.running_var, rtol=1e-5, atol=1e-6)


class _Block(nn.Module):
    def __init__(self, quantizer):
        super().__init__()
        self.bn = _norm(4)
        self.conv = QuantConv2d(4, 5, 3, padding=1, bias=False, input_quantizer=quantizer)

    def forward(self, x):
        return self.conv.forward_from_norm(self.bn, x)


def _fused_calls(monkeypatch) -> list:
    calls: list = []
    real = fused_norm.norm_binarize
    monkeypatch.setattr(fused_norm, "norm_binarize", lambda *a: calls.append(1) or real(*a))
    return calls


def test_layer_takes_the_fused_path_only_where_it_applies(fused_kernels, monkeypatch):
    torch.manual_seed(3)
    block = _Block(_quantizer("abc3"))
    x = torch.randn(2, 4, 6, 6)
    calls = _fused_calls(monkeypatch)
    fused = block(x)
    assert calls == [1]
    expected = block.conv(block.bn(x))  # the separate calls, on the same statistics
    assert torch.allclose(fused, expected, atol=1e-5)

    block.eval()  # running statistics: the separate operations
    assert torch.equal(block(x), block.conv(block.bn(x)))
    block.train()
    assert calls == [1]

    seen = []
    handle = block.conv.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    block(x)  # a hook on the layer sees its real input: the separate calls
    handle.remove()
    assert calls == [1] and len(seen) == 1
    with torch.no_grad():  # the hook saw the layer's input as without fusion: BN's output
        assert torch.equal(seen[0], block.bn(x))

    with fused_norm.enabled(False):  # the bench's "BatchNorm apart" row
        block(x)
    assert calls == [1]
    block(x)
    assert calls == [1, 1]

    QF.set_kernel("eager")
    block(x)
    assert calls == [1, 1]


def test_gpu_float64_and_compiled_inputs_take_the_separate_operations(fused_kernels):
    bn, q = _norm(2), _quantizer("abc3")
    assert fused_norm.applies(bn, q, torch.randn(2, 2, 3, 3))
    assert not fused_norm.applies(bn, q, torch.randn(2, 2, 3, 3, dtype=torch.float64))
    assert not fused_norm.applies(bn, q, torch.randn(2, 2, 3))  # not NCHW
    assert not fused_norm.applies(bn, q, torch.randn(1, 2, 1, 1))  # one value per channel
    assert not fused_norm.applies(bn, ABCInput(N=9), torch.randn(2, 2, 3, 3))  # N > 8
    assert not fused_norm.applies(nn.BatchNorm1d(2), q, torch.randn(2, 2, 3, 3))
    assert not fused_norm.applies(bn, None, torch.randn(2, 2, 3, 3))
    if torch.cuda.is_available():
        assert not fused_norm.applies(bn.cuda(), q.cuda(), torch.randn(2, 2, 3, 3).cuda())


@pytest.mark.parametrize(
    ("arch", "quant", "batch"),
    [
        ("resnet20", dict(name="abc", M=3, N=3), 16),
        ("resnet20", dict(name="xnor"), 16),
        ("vgg_small", dict(name="abc", M=3, N=3), 4),
    ],
)
def test_training_step_matches_the_separate_operations(
    fused_kernels, monkeypatch, arch, quant, batch
):
    """A training step with every BatchNorm → binarised conv fused (``norm_into`` in the
    ResNet blocks, ``NormIntoSequential`` in VGG): the loss and every parameter's gradient
    agree with the separate operations. Some gradients (a BatchNorm scale early in the
    network) sum many cancelling terms and move by a percent when a few binarised values
    flip; there the bound is what the separate operations themselves do when the input moves
    by one part in a million."""
    torch.manual_seed(4)
    model = quantize_model(build_model(arch, num_classes=10, in_channels=1),
                           QuantConfig(**quant))  # fmt: skip
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))
    results, calls = {}, _fused_calls(monkeypatch)
    for name, kernel, inputs in (
        ("eager", "eager", x), ("nudged", "eager", x * (1 + 1e-6)), ("fused", "auto", x)
    ):  # fmt: skip
        QF.set_kernel(kernel)
        m = copy.deepcopy(model).train()
        loss = F.cross_entropy(m(inputs), y)
        loss.backward()
        grads = {n: p.grad for n, p in m.named_parameters()}
        results[name] = loss.item(), grads, dict(m.named_buffers())
    (loss0, g0, b0), (_, g_nudged, _), (loss1, g1, b1) = results.values()
    assert len(calls) == (5 if arch == "vgg_small" else 18)  # every binarised conv but the stem
    assert loss1 == pytest.approx(loss0, rel=1e-4)
    assert set(g0) == set(g1) and all(g0[n] is not None for n in g0)

    def rel(a, b):
        return float((a - b).norm() / b.norm().clamp_min(1e-12))

    for name in g0:
        bound = max(1e-2, 5 * rel(g_nudged[name], g0[name]))
        assert rel(g1[name], g0[name]) < bound, (name, rel(g1[name], g0[name]), bound)
    for name in b0:
        assert torch.allclose(b1[name].float(), b0[name].float(), atol=1e-4), name


def test_without_a_compiler_one_line_and_the_separate_operations(monkeypatch, capsys):
    def no_compiler(*args, **kwargs):
        raise RuntimeError("Error building extension 'x': c++: not found")

    monkeypatch.setattr(fused_norm, "load_extension", no_compiler)
    monkeypatch.setattr(fused_norm, "_state", {"module": None, "tried": False, "error": None})
    previous = QF.kernel_name()
    QF.set_kernel("auto")
    try:
        block = _Block(_quantizer("abc3"))
        x = torch.randn(2, 4, 6, 6)
        out = block(x)
        assert fused_norm.kernels() is None
    finally:
        QF.set_kernel(previous)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "c++: not found" in err[0] and "separately" in err[0]
    assert torch.allclose(out, block.conv(block.bn(x)), atol=1e-6)
