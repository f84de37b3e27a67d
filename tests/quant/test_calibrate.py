"""Activation calibration: v and β of the ABC activation quantizers fitted to data."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from abc_lab.models import build_model
from abc_lab.quant import ABCInput, QuantConfig, quantize_model
from abc_lab.quant import functional as QF
from abc_lab.quant.calibrate import _Sorted, calibrate_activations, first_inputs, fit_activation

SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}


def brute_error(x: torch.Tensor, v: torch.Tensor, beta: torch.Tensor) -> float:
    """E[(x − Σ β_n A_n(x))²] / E[x²] computed the long way, with the quantizer's own forward."""
    approx = QF.abc_activation(x, v, beta)
    return float(((x - approx) ** 2).mean() / (x * x).mean())


@pytest.mark.parametrize("N", [1, 3, 5])
def test_fitted_beta_of_a_standard_normal_is_the_closed_form_one(N):
    x = torch.randn(400_000, generator=torch.Generator().manual_seed(0))
    v = QF.activation_shifts(N)
    fitted_v, beta = fit_activation(x, v, torch.full((N,), 1.0 / N), "beta")
    assert torch.equal(fitted_v, v)  # "beta" leaves the shifts (and their STE windows) alone
    assert beta == pytest.approx(QF.gaussian_beta(v), abs=0.005)


@pytest.mark.parametrize("N", [1, 2, 3, 5])
def test_fitted_shifts_beat_the_defaults_and_the_fast_error_is_the_true_one(N):
    gen = torch.Generator().manual_seed(1)
    x = 2.5 * torch.randn(100_000, generator=gen) + 0.4  # wider and shifted: not N(0, 1)
    v0, b0 = QF.activation_shifts(N), torch.full((N,), 1.0 / N)
    _, b_only = fit_activation(x, v0, b0, "beta")
    v, beta = fit_activation(x, v0, b0, "shifts")
    default, beta_fit, full = (
        brute_error(x, v0, b0),
        brute_error(x, v0, b_only),
        brute_error(x, v, beta),
    )
    assert full <= beta_fit + 1e-6 and beta_fit < default
    sample = _Sorted(x)
    assert sample.error(0.5 - v.double(), beta) / sample.energy == pytest.approx(full, rel=1e-4)
    if N > 1:  # the thresholds stay ordered and evenly spaced
        t = 0.5 - v
        assert torch.all(t[1:] > t[:-1])
        assert torch.allclose(t[1:] - t[:-1], (t[1] - t[0]).expand(N - 1), atol=1e-5)


def test_bad_modes_are_rejected():
    with pytest.raises(ValueError, match="act_calibration must be"):
        fit_activation(torch.randn(10), torch.zeros(1), torch.ones(1), "minmax")
    with pytest.raises(ValueError, match="act_calibration must be"):
        QuantConfig(name="abc", act_calibration="minmax")
    assert "act_calibration" in QuantConfig(name="abc", N=2).used_fields()
    assert "act_calibration" not in QuantConfig(name="abc", N=0).used_fields()
    assert "act_calibration" not in QuantConfig(name="xnor").used_fields()


def _model(N: int = 2) -> nn.Module:
    torch.manual_seed(0)
    model = quantize_model(build_model(**SPEC), QuantConfig(name="abc", M=2, N=N))
    return model


@pytest.mark.parametrize("mode", ["beta", "shifts"])
def test_calibration_fits_every_layer_in_forward_order_and_leaves_bn_alone(mode):
    model = _model()
    gen = torch.Generator().manual_seed(2)
    batches = [torch.randn(8, 1, 28, 28, generator=gen) for _ in range(2)]
    norms = {n: (m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked))
             for n, m in model.named_modules() if isinstance(m, nn.BatchNorm2d)}  # fmt: skip
    model.eval()
    fits = calibrate_activations(model, batches, mode)
    quantizers = [n for n, m in model.named_modules() if isinstance(m, ABCInput)]
    assert [f"{f.name}.input_quantizer" for f in fits] == quantizers and len(fits) == 18
    for f in fits:
        assert f.error_after < f.error_before
    assert not model.training  # its mode is given back
    for n, m in model.named_modules():
        if isinstance(m, nn.BatchNorm2d):
            mean, var, tracked = norms[n]
            assert torch.equal(m.running_mean, mean) and torch.equal(m.running_var, var)
            assert int(m.num_batches_tracked) == tracked
    # each layer was fitted to what the calibrated layers before it hand on: a second pass
    # finds every layer already fitted
    again = calibrate_activations(model, batches, mode)
    for first, second in zip(fits, again, strict=True):
        assert second.error_before == pytest.approx(first.error_after, rel=1e-5, abs=1e-9)


def test_calibration_needs_batches():
    with pytest.raises(ValueError, match="at least one batch"):
        calibrate_activations(_model(), [], "beta")


@pytest.mark.parametrize(
    "t, share", [([0.0], 1 / 6), ([-1.0, 0.0, 1.0], 3 / 6), ([-0.25, 0.25], 1.5 / 6),
                 ([-2.0, 2.0], 2 / 6), ([-2.9, 5.0], 0.6 / 6)]
)  # fmt: skip
def test_share_of_inputs_inside_the_ste_windows(t, share):
    sample = _Sorted(torch.linspace(-3.0, 3.0, 600_001))  # uniform on [-3, 3]
    assert sample.in_windows(torch.tensor(t)) == pytest.approx(share, abs=1e-4)


def test_shifts_bn_rescales_each_layers_batchnorm_and_keeps_the_function():
    gen = torch.Generator().manual_seed(3)
    batches = [torch.randn(8, 1, 28, 28, generator=gen) for _ in range(2)]
    plain, folded = _model(N=3), _model(N=3)
    fits_plain = calibrate_activations(plain, batches, "shifts")
    fits = calibrate_activations(folded, batches, "shifts_bn")
    # every binarised conv of this ResNet reads a BatchNorm that nothing else reads
    assert all(f.bn_scale is not None and f.bn_scale > 0 for f in fits)
    assert all(f.bn_scale is None for f in fits_plain)
    for f, p in zip(fits, fits_plain, strict=True):
        t = 0.5 - f.v
        assert torch.allclose(t[1:] - t[:-1], torch.ones(2), atol=1e-4)  # thresholds 1 apart
        assert torch.allclose(t, f.bn_scale * (0.5 - p.v), atol=1e-4)
        assert torch.equal(f.beta, p.beta) and f.error_after == p.error_after
        assert f.window_after >= p.window_after  # the windows tile: at least as much gradient
    # the same function: equal outputs in training and in eval mode
    for mode in (True, False):
        plain.train(mode), folded.train(mode)
        with torch.no_grad():
            a, b = plain(batches[1]), folded(batches[1])
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4)
        assert torch.equal(a.argmax(1), b.argmax(1))


def test_shifts_bn_leaves_a_batchnorm_that_other_modules_read():
    class Shared(nn.Module):
        """A BatchNorm whose output a binarised conv and a float conv both read."""

        def __init__(self) -> None:
            super().__init__()
            self.bn = nn.BatchNorm2d(4)
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.side = nn.Conv2d(4, 4, 1)

        def forward(self, x):
            h = self.bn(x)
            return (self.conv(h) + self.side(h)).mean((2, 3))

    torch.manual_seed(0)
    model = quantize_model(
        Shared(), QuantConfig(name="abc", M=1, N=3, keep_first=False, keep_fp=["side"])
    )
    weight = model.bn.weight.clone()
    (fit,) = calibrate_activations(model, [torch.randn(8, 4, 6, 6)], "shifts_bn")
    assert fit.bn_scale is None and torch.equal(model.bn.weight, weight)


def test_first_inputs_reads_only_the_batches_it_returns():
    read = []

    def loader():
        for i in range(5):
            read.append(i)
            yield torch.full((2, 1), float(i)), torch.zeros(2)

    assert [float(x[0, 0]) for x in first_inputs(loader(), 3)] == [0.0, 1.0, 2.0]
    assert read == [0, 1, 2]
    read.clear()
    assert first_inputs(loader(), 0) == [] and read == []
    assert len(first_inputs(loader(), 9)) == 5
