"""The math of ABC-Net bases, scales and straight-through estimators."""

import math

import numpy as np
import pytest
import torch

from abc_lab.quant import (
    abc_activation,
    activation_bases,
    activation_shifts,
    fold_weight_bases,
    sign_window_ste,
    weight_bases,
    weight_reconstruction_error,
    weight_shifts,
)


def test_weight_shifts_follow_the_paper():
    assert weight_shifts(1).tolist() == [0.0]
    assert weight_shifts(2).tolist() == [-1.0, 1.0]
    expected = [-1 + (i - 1) * 2 / 4 for i in range(1, 6)]
    assert torch.allclose(weight_shifts(5), torch.tensor(expected))


@pytest.mark.parametrize("bad", [0, -1, 2.5, "3", None])
def test_weight_shifts_reject_bad_M(bad):
    with pytest.raises(ValueError, match="M"):
        weight_shifts(bad)


@pytest.mark.parametrize("scope", ["layer", "channel"])
@pytest.mark.parametrize("M", [1, 2, 3, 5])
def test_bases_are_exactly_pm1_and_use_shifted_sign(scope, M):
    torch.manual_seed(M)
    W = torch.randn(6, 3, 3, 3)
    W[0, 0, 0, 0] = W.mean()  # a value sitting exactly on a threshold still maps to ±1
    B, alpha = weight_bases(W, M, scope=scope)
    assert B.shape == (M, *W.shape)
    assert set(B.unique().tolist()) <= {-1.0, 1.0}
    assert B.abs().eq(1).all()
    u = weight_shifts(M)
    flat = W.reshape(1, -1) if scope == "layer" else W.reshape(6, -1)
    mean = flat.mean(1, keepdim=True)
    std = flat.std(1, correction=0, keepdim=True)
    for m in range(M):
        z = (flat - mean + u[m] * std).reshape(W.shape)
        expected = torch.where(z >= 0, 1.0, -1.0)
        assert torch.equal(B[m], expected)
    assert alpha.shape == ((M,) if scope == "layer" else (M, 6))


def _lstsq_alpha(B: torch.Tensor, w: torch.Tensor) -> np.ndarray:
    """Independent least squares without intercept (numpy, float64)."""
    A = B.reshape(B.shape[0], -1).T.double().numpy()
    sol, *_ = np.linalg.lstsq(A, w.reshape(-1).double().numpy(), rcond=None)
    return sol


@pytest.mark.parametrize("M", [1, 2, 3, 4, 5])
def test_alpha_is_the_least_squares_solution_layer(M):
    torch.manual_seed(10 + M)
    W = torch.randn(16, 8, 3, 3) * 0.05 + 0.01
    B, alpha = weight_bases(W, M)
    np.testing.assert_allclose(alpha.double().numpy(), _lstsq_alpha(B, W), rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("M", [1, 3, 5])
def test_alpha_is_the_least_squares_solution_per_channel(M):
    torch.manual_seed(20 + M)
    W = torch.randn(5, 4, 3, 3)
    B, alpha = weight_bases(W, M, scope="channel")
    for c in range(5):
        ref = _lstsq_alpha(B[:, c], W[c])
        np.testing.assert_allclose(alpha[:, c].double().numpy(), ref, rtol=1e-4, atol=1e-6)


def test_no_intercept_fit_differs_from_intercept_fit():
    # Guard against the sklearn-LinearRegression pitfall: an intercept would change alpha.
    torch.manual_seed(0)
    W = torch.randn(64) + 0.5
    B, alpha = weight_bases(W, 2)
    A = B.reshape(2, -1).T.double().numpy()
    A1 = np.hstack([A, np.ones((A.shape[0], 1))])
    with_intercept, *_ = np.linalg.lstsq(A1, W.double().numpy(), rcond=None)
    assert not np.allclose(with_intercept[:2], alpha.double().numpy(), atol=1e-3)
    np.testing.assert_allclose(alpha.double().numpy(), _lstsq_alpha(B, W), rtol=1e-5)


def test_coinciding_bases_and_constant_weights_stay_finite():
    tiny = torch.tensor([[0.3, -0.2]])  # 2 weights: 5 bases must coincide
    B, alpha = weight_bases(tiny, 5)
    assert torch.isfinite(alpha).all()
    approx = fold_weight_bases(B, alpha)
    # pseudo-inverse gives the least-squares optimum even with a singular BᵀB
    best = (
        torch.from_numpy(B.reshape(5, -1).T.double().numpy() @ _lstsq_alpha(B, tiny))
        .float()
        .reshape(tiny.shape)
    )
    assert torch.allclose(approx, best, atol=1e-6)
    for scope in ("layer", "channel"):
        const = torch.full((3, 2, 3, 3), 0.7)
        B, alpha = weight_bases(const, 3, scope=scope)
        assert torch.isfinite(alpha).all() and B.abs().eq(1).all()
        assert torch.allclose(fold_weight_bases(B, alpha), const, atol=1e-6)
    zeros = torch.zeros(4, 4)
    B, alpha = weight_bases(zeros, 3)
    assert torch.isfinite(alpha).all() and torch.equal(fold_weight_bases(B, alpha), zeros)


def _train_small_cnn(steps: int = 150) -> torch.nn.Module:
    """A small CNN trained on a synthetic 4-class image task: its weights are trained weights."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randn(4, 1, 12, 12, generator=g)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(32, 4),
    )  # fmt: skip
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    for _ in range(steps):
        y = torch.randint(0, 4, (32,), generator=g)
        x = protos[y] + 0.8 * torch.randn(32, 1, 12, 12, generator=g)
        loss = torch.nn.functional.cross_entropy(net(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 1.0, "the helper network did not train"
    return net


@pytest.mark.parametrize("scope", ["layer", "channel"])
def test_reconstruction_error_does_not_increase_with_M(scope):
    torch.manual_seed(3)
    tensors = [torch.randn(32, 16, 3, 3), torch.randn(64, 32, 1, 1) * 0.1, torch.randn(10, 64)]
    tensors += [m.weight.detach() for m in _train_small_cnn() if hasattr(m, "weight")]
    for W in tensors:
        errors = [weight_reconstruction_error(W, M, scope=scope) for M in range(1, 7)]
        for M in range(1, 6):
            assert errors[M] <= errors[M - 1] + 1e-6, (tuple(W.shape), errors)
        assert errors[4] < 0.75 * errors[0]


@pytest.mark.parametrize("scope", ["layer", "channel"])
def test_weight_gradient_is_sum_of_alpha_times_base_gradient(scope):
    torch.manual_seed(4)
    W = torch.randn(4, 3, 3, 3, requires_grad=True)
    G = torch.randn(4, 3, 3, 3)
    B, alpha = weight_bases(W, 3, scope=scope)
    (fold_weight_bases(B, alpha) * G).sum().backward()
    # ∂c/∂W = Σ_m α_m ∂c/∂B_m with ∂c/∂B_m = G for the unscaled base
    scale = alpha.sum(0) if scope == "layer" else alpha.sum(0).view(4, 1, 1, 1)
    assert torch.allclose(W.grad, scale * G, atol=1e-6)


def test_trainable_weight_shifts_receive_gradient():
    W = torch.randn(8, 4, 3, 3, requires_grad=True)
    u = weight_shifts(3).clone().requires_grad_(True)
    B, alpha = weight_bases(W, 3, shifts=u)
    (fold_weight_bases(B, alpha) * torch.randn_like(W)).sum().backward()
    assert u.grad is not None and u.grad.abs().sum() > 0


@pytest.mark.parametrize("bad_shifts", [[0.0, 1.0], [[0.0, 1.0, 2.0]], [0.1] * 4])
def test_weight_bases_reject_wrong_shift_length(bad_shifts):
    with pytest.raises(ValueError, match="shifts"):
        weight_bases(torch.randn(4, 4), 3, shifts=bad_shifts)


def test_weight_bases_reject_bad_scope():
    with pytest.raises(ValueError, match="scope"):
        weight_bases(torch.randn(4, 4), 3, scope="row")


# ---------------------------------------------------------------- activations


def test_activation_shifts_start_different():
    for N in range(2, 6):
        v = activation_shifts(N)
        assert len(set(v.tolist())) == N
    assert activation_shifts(1).tolist() == [0.5]
    with pytest.raises(ValueError, match="N"):
        activation_shifts(0)


def _manual_activation(x, v, beta):
    """A_n = 2·1[clip(x + v_n, 0, 1) ≥ 0.5] - 1, written out literally."""
    out = torch.zeros_like(x)
    for n in range(len(v)):
        h = torch.clamp(x + v[n], 0, 1)
        out += beta[n] * (2 * (h >= 0.5).float() - 1)
    return out


def test_activation_forward_and_gradients_match_the_formula():
    torch.manual_seed(5)
    # x on a 1/64 grid and dyadic v: x + v is exact, so the literal formula is exact too
    x = (torch.randint(-128, 129, (2000,)) / 64.0).requires_grad_(True)
    v = torch.tensor([-0.25, 0.5, 1.125], requires_grad=True)
    beta = torch.tensor([0.2, 0.7, 0.4], requires_grad=True)
    g = torch.randn(2000)
    out = abc_activation(x, v, beta)
    assert torch.equal(out, _manual_activation(x.detach(), v.detach(), beta.detach()))
    out.backward(g)
    xd, vd, bd = x.detach(), v.detach(), beta.detach()
    windows = [((xd + vd[n] >= 0) & (xd + vd[n] <= 1)).float() for n in range(3)]
    bases = [torch.where(xd + vd[n] >= 0.5, 1.0, -1.0) for n in range(3)]
    assert torch.allclose(x.grad, g * sum(bd[n] * windows[n] for n in range(3)))
    assert torch.allclose(v.grad, torch.stack([bd[n] * (g * windows[n]).sum() for n in range(3)]))
    assert torch.allclose(beta.grad, torch.stack([(g * bases[n]).sum() for n in range(3)]))
    # the per-base (reference) form gives the same values and gradients
    x2, v2, b2 = (t.detach().clone().requires_grad_(True) for t in (x, v, beta))
    A, b = activation_bases(x2, v2, b2)
    assert A.abs().eq(1).all()
    ((b.view(-1, 1) * A).sum(0) * g).sum().backward()
    for a, c in ((x, x2), (v, v2), (beta, b2)):
        assert torch.allclose(a.grad, c.grad, atol=1e-5)


def test_activation_window_edges():
    # window is inclusive: 0 ≤ x + v ≤ 1
    x = torch.tensor([-0.5, -0.5001, 0.5, 0.5001, 0.0], requires_grad=True)
    v = torch.tensor([0.5])
    abc_activation(x, v, torch.ones(1)).sum().backward()
    assert x.grad.tolist() == [1.0, 0.0, 1.0, 0.0, 1.0]


def test_activation_rejects_mismatched_params():
    with pytest.raises(ValueError, match="beta"):
        abc_activation(torch.randn(3), torch.zeros(2), torch.ones(3))


def test_sign_window_ste():
    x = torch.tensor([-2.0, -1.0, -0.3, 0.0, 0.4, 1.0, 1.5], requires_grad=True)
    y = sign_window_ste(x)
    assert y.tolist() == [-1, -1, -1, 1, 1, 1, 1]
    y.sum().backward()
    assert x.grad.tolist() == [0, 1, 1, 1, 1, 1, 0]


def test_gaussian_beta_is_the_least_squares_fit_to_a_standard_normal():
    from abc_lab.quant.functional import activation_shifts, gaussian_beta

    torch.manual_seed(0)
    x = torch.randn(2_000_000, dtype=torch.float64)
    for n, spread in [(1, 1.0), (3, 1.0), (5, 1.0), (4, 0.6)]:
        v = activation_shifts(n, 0.5, spread).double()
        bases = torch.where(x[:, None] >= (0.5 - v)[None, :], 1.0, -1.0).double()  # sign(x - t)
        empirical = torch.linalg.lstsq(bases, x[:, None]).solution.squeeze(1)
        assert torch.allclose(gaussian_beta(v), empirical, atol=3e-3), (n, spread)
    # one base at threshold 0: beta = E|x| = sqrt(2/pi)
    assert gaussian_beta(torch.tensor([0.5])).item() == pytest.approx(math.sqrt(2 / math.pi))


def test_beta_init_lsq_reaches_the_layers_and_bad_names_are_rejected():
    from abc_lab.quant import QuantConfig
    from abc_lab.quant.functional import gaussian_beta

    kernel, act = QuantConfig(name="abc", M=2, N=3, beta_init="lsq").make()
    assert torch.allclose(act.beta.detach(), gaussian_beta(act.v))
    assert not torch.allclose(act.beta.detach(), torch.full((3,), 1 / 3))
    _, default = QuantConfig(name="abc", M=2, N=3).make()
    assert torch.equal(default.beta.detach(), torch.full((3,), 1 / 3))
    with pytest.raises(ValueError, match="beta_init must be null"):
        QuantConfig(name="abc", beta_init="gauss")
