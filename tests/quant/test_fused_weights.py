"""Weights of all layers quantized together (``fold_layers``, the model's pre-forward hook):
the same values and straight-through gradients as the per-layer forms, and far fewer
operations per training step."""

import copy

import pytest
import torch
from torch import nn

from abc_lab.models import build_model
from abc_lab.quant import QuantConfig, fold_weight_bases, quantize_model, weight_bases
from abc_lab.quant import functional as QF
from abc_lab.quant.layers import QuantConv2d, QuantLinear

SHAPES = [(6, 3, 3, 3), (4, 6, 1, 1), (7, 5), (8, 8, 3, 3), (1, 4, 3, 3)]


def _weights(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(s, generator=g) * 0.1 + 0.01 * i).requires_grad_(True)
            for i, s in enumerate(SHAPES)]  # fmt: skip


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    tol = 1e-5 * b.abs().max().clamp_min(1.0)
    assert torch.allclose(a, b, atol=tol, rtol=1e-5), (what, (a - b).abs().max())


@pytest.mark.parametrize("trainable", [False, True])
@pytest.mark.parametrize("scope", ["layer", "channel"])
@pytest.mark.parametrize("M", [1, 2, 3, 5])
def test_abc_fold_of_many_layers_equals_each_layer_on_its_own(M, scope, trainable):
    ws, ref_ws = _weights(M), _weights(M)
    shifts = [QF.weight_shifts(M) * (1 + 0.1 * i) for i in range(len(SHAPES))]  # all differ
    us = [u.clone().requires_grad_(trainable) for u in shifts]
    ref_us = [u.clone().requires_grad_(trainable) for u in shifts]
    folded = QF.fold_layers("abc", ws, us, scope)
    gs = [torch.randn_like(w) for w in ws]
    sum((f * g).sum() for f, g in zip(folded, gs, strict=True)).backward()
    for i, (W, u, f, g) in enumerate(zip(ref_ws, ref_us, folded, gs, strict=True)):
        B, alpha = weight_bases(W, M, shifts=u, scope=scope)
        ref = fold_weight_bases(B, alpha)
        _close(f.detach(), ref.detach(), f"value {i}")
        (ref * g).sum().backward()
        _close(ws[i].grad, W.grad, f"weight grad {i}")
        if trainable:
            _close(us[i].grad, u.grad, f"shift grad {i}")
        else:
            assert us[i].grad is None


def _base_patterns(u: torch.Tensor) -> torch.Tensor:
    """(L, M+1, M): row k holds the M bases (±1) of a weight whose bases are +1 for exactly k
    of them (the k highest ranks of ``QF.base_ranks``)."""
    ks = torch.arange(u.shape[1] + 1).view(1, -1, 1)
    return torch.where(QF.base_ranks(u).unsqueeze(1) < ks, 1.0, -1.0).to(u.dtype)


def _pinv_alpha(counts: torch.Tensor, sums: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """α of each segment as the pseudo-inverse solves it from the level counts and sums."""
    P = _base_patterns(u.double()).expand(counts.shape[0], -1, -1)  # (S, M+1, M)
    gram = P.transpose(1, 2) @ (counts.unsqueeze(-1) * P)
    rhs = (P * sums.unsqueeze(-1)).sum(1)
    return (torch.linalg.pinv(gram, hermitian=True) @ rhs.unsqueeze(-1)).squeeze(-1)


@pytest.mark.parametrize("M", [1, 2, 3, 5, 8])
def test_closed_form_level_fit_is_the_minimum_norm_least_squares_alpha(M):
    """``level_fit`` gives the pseudo-inverse's α: with every level filled, with empty
    interior levels, with both ends empty, and with tied shifts (levels that cannot fill)."""
    g = torch.Generator().manual_seed(M)
    for trial in range(60):
        counts = torch.randint(0, 4, (9, M + 1), generator=g).double()
        if trial % 3 == 0 and M > 1:  # no weight at either end
            counts[:, 0] = counts[:, M] = 0
            counts[:, 1 + trial % (M - 1)] += 1
        counts[counts.sum(1) == 0, M] = 1  # every segment holds weights
        sums = counts * torch.randn(9, M + 1, generator=g, dtype=torch.float64)
        u = torch.randn(1, M, generator=g, dtype=torch.float64)
        if trial % 4 == 0 and M > 1:
            u[0, 1] = u[0, 0]
        values = QF.level_fit(counts, sums)
        alpha = ((values[:, 1:] - values[:, :-1]) / 2).gather(1, QF.base_ranks(u).expand(9, -1))
        expected = _pinv_alpha(counts, sums, u)
        assert torch.allclose(alpha, expected, atol=1e-10), (trial, (alpha - expected).abs().max())
        # filled levels are quantized to what the α give them
        fitted = (expected.unsqueeze(1) * _base_patterns(u).expand(9, -1, -1)).sum(-1)
        assert torch.allclose(values[counts > 0], fitted[counts > 0], atol=1e-10)


def test_constant_layer_splits_alpha_evenly():
    """All weights equal: every base is +1, and α is w/M for each (minimum norm)."""
    w = torch.full((4, 3, 3, 3), 0.25)
    (folded,) = QF.fold_layers("abc", [w], [QF.weight_shifts(3)])
    B, alpha = weight_bases(w, 3)
    assert torch.allclose(alpha, torch.full_like(alpha, 0.25 / 3))
    assert torch.allclose(folded, w)


@pytest.mark.parametrize("rule", ["abc", "bwn"])
@pytest.mark.parametrize("scope", ["layer", "channel"])
def test_scanned_and_scattered_segment_sums_agree(rule, scope):
    """The GPU form of the segment sums (prefix-sum differences) gives the CPU form's values
    and gradients; "auto" scatters on a CPU."""
    results = {}
    for mode in ("scatter", "scan"):
        ws = _weights(3)
        shifts = [QF.weight_shifts(3).requires_grad_(True) for _ in ws]
        with QF.segment_sums(mode):
            folded = QF.fold_layers(rule, ws, shifts if rule == "abc" else None, scope)
            sum((f * f).sum() for f in folded).backward()
        results[mode] = (folded, [w.grad for w in ws], [u.grad for u in shifts])
    for a, b in zip(results["scatter"][0] + results["scatter"][1],
                    results["scan"][0] + results["scan"][1], strict=True):  # fmt: skip
        _close(a.detach(), b.detach(), "value or weight grad")
    if rule == "abc":
        for a, b in zip(results["scatter"][2], results["scan"][2], strict=True):
            _close(a, b, "shift grad")
    assert not QF._scan_sums(torch.zeros(1))
    with pytest.raises(ValueError, match="segment sums must be one of"):
        with QF.segment_sums("atomic"):
            pass


def test_bwn_and_sign_folds_equal_the_per_layer_quantizers():
    for name, rule in (("bwn", "bwn"), ("bnn", "sign")):
        kernel, _ = QuantConfig(name=name).make()
        ws, ref_ws = _weights(7), _weights(7)
        for w in ws + ref_ws:
            w.data.mul_(12)  # some weights beyond the |W| ≤ 1 window of the sign STE
        folded = QF.fold_layers(rule, ws)
        gs = [torch.randn_like(w) for w in ws]
        sum((f * g).sum() for f, g in zip(folded, gs, strict=True)).backward()
        for i, (W, f, g) in enumerate(zip(ref_ws, folded, gs, strict=True)):
            B, alpha = kernel.decompose(W)
            ref = QF.fold_weight_bases(B, alpha)
            assert torch.equal(f.detach().sign(), ref.detach().sign()), (name, i)
            _close(f.detach(), ref.detach(), f"{name} value {i}")
            (ref * g).sum().backward()
            _close(ws[i].grad, W.grad, f"{name} grad {i}")


def _loss_and_grads(net: nn.Module, x, y):
    net.zero_grad(set_to_none=True)
    loss = nn.functional.cross_entropy(net(x), y)
    loss.backward()
    return loss.detach(), {
        n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None
    }


@pytest.mark.parametrize(
    "quant",
    [
        dict(name="abc", M=3, N=3),
        dict(name="abc", M=2, N=1, alpha_scope="channel", trainable_shifts=True),
        dict(name="abc", M=3, N=0),
        dict(name="xnor"),
        dict(name="bnn"),
        dict(name="bnn", bnn_scale="fan_in"),
        dict(name="bwn"),
    ],
)
def test_model_folds_all_weights_once_per_forward_with_the_same_result(quant, monkeypatch):
    torch.manual_seed(0)
    net = build_model("resnet20", num_classes=10, in_channels=1, input_size=28)
    net = quantize_model(net, QuantConfig(**quant)).train()
    per_layer = copy.deepcopy(net)
    per_layer._forward_pre_hooks.clear()  # each layer quantizes its own weight
    per_layer._forward_hooks.clear()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    calls = []
    real = QF.fold_layers
    monkeypatch.setattr(QF, "fold_layers", lambda *a, **k: calls.append(len(a[1])) or real(*a, **k))
    loss, grads = _loss_and_grads(net, x, y)
    quantized = [m for m in net.modules() if isinstance(m, QuantConv2d | QuantLinear)]
    assert calls == [len(quantized)]  # one call folds every quantized layer
    assert all("_step_weight" not in m.__dict__ for m in quantized)  # released after forward
    calls.clear()
    ref_loss, ref_grads = _loss_and_grads(per_layer, x, y)
    if quant["name"] != "bnn":  # bnn's single-layer path is sign_window_ste, not fold_layers
        assert calls == [1] * len(quantized)
    _close(loss, ref_loss, "loss")
    assert grads.keys() == ref_grads.keys()
    for name in grads:
        _close(grads[name], ref_grads[name], name)


def test_reference_mode_bypasses_the_batched_weights(monkeypatch):
    from abc_lab.quant import set_reference_mode

    torch.manual_seed(0)
    net = quantize_model(
        build_model("resnet20", num_classes=10, in_channels=1, input_size=28), "abc"
    ).train()
    ref = copy.deepcopy(net)
    set_reference_mode(ref, True)
    x, y = torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,))
    loss, _ = _loss_and_grads(net, x, y)
    calls = []
    real = QF.fold_layers
    monkeypatch.setattr(QF, "fold_layers", lambda *a, **k: calls.append(1) or real(*a, **k))
    ref_loss, _ = _loss_and_grads(ref, x, y)
    assert calls == []  # the M·N path decomposes each layer's weight itself
    assert torch.allclose(loss, ref_loss, rtol=1e-4)


@pytest.mark.slow
def test_abc_training_step_runs_at_most_1_5x_the_operations_of_fp():
    """The profiler's count of one ResNet-20 training step (compiled activation kernels, as
    in training): abc(3,3) within 1.5x of fp, independent of batch size."""
    from abc_lab.bench import BenchCase, count_ops

    previous = QF._kernel["name"]
    QF.set_kernel("auto")
    try:
        fp, abc = count_ops(
            [BenchCase("fp", QuantConfig(name="fp")),
             BenchCase("abc", QuantConfig(name="abc", M=3, N=3))],
            batch_size=8,
        )  # fmt: skip
        compiled = QF._kernel["name"] != "eager"  # auto falls back where compile fails
    finally:
        QF.set_kernel(previous)
    if not compiled:
        pytest.skip("torch.compile is unavailable here")
    assert abc.events <= 1.5 * fp.events, (abc, fp)
    assert abc.operators <= 1.5 * fp.operators, (abc, fp)
