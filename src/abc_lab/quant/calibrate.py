"""Data calibration of the ABC activation quantizers: each binarised layer's shifts v and
scales β fitted to the inputs that layer sees, before training.

The paper's activations R ≈ Σ_n β_n A_n, A_n = sign(R − t_n) with thresholds t_n = 0.5 − v_n,
start from fixed v and β (``activation_shifts``, β = 1/N) whatever the layer's inputs are.
A network started from trained fp weights hands each layer inputs whose spread differs from
layer to layer, and SGD moves v and β only slowly. Calibration fits them by least squares,
min E[(x − Σ_n β_n A_n(x))²] over the layer's inputs x on a few training batches, layer by
layer in forward order, so each layer is fitted to what the already calibrated layers before
it hand on.

``act_calibration`` modes:
- ``"beta"``: β only, the shifts as initialised (the STE windows stay where they were);
- ``"shifts"``: thresholds and β; the thresholds stay evenly spaced, t_n = c + h·s_n with
  s = linspace(-1, 1, N), their centre c and half-width h searched on a grid around the
  inputs' mean and spread (the current thresholds compete too), β solved for each.
- ``"shifts_bn"``: as ``"shifts"``, then the BatchNorm whose output only this layer reads is
  rescaled by k (its weight and bias), and the thresholds with it, so that neighbouring
  thresholds lie 1 apart (one threshold: 1 = two standard deviations of the inputs). The
  network computes the same function (sign(kx − kt) = sign(x − t)), but the straight-through
  estimator's windows, 1 wide around each threshold (the paper's clip(x + v, 0, 1)), now
  tile the inputs' range instead of leaving gaps between thresholds that lie wider apart.
  A layer whose input is not such a BatchNorm's output keeps the ``"shifts"`` fit; the
  rescaling is undone where the network's output would change.

For a sorted sample x_(1) ≤ … ≤ x_(n) and thresholds t, with k(t) the count below t:
E[A_i A_j] = 1 − 2|k(t_i) − k(t_j)|/n and E[x A_i] = (Σx − 2 Σ_{x<t_i} x)/n, so every grid
point costs a binary search, not a pass over the sample.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .batch_statistics import batch_statistics
from .quantizers import ABCInput, InputQuantizer, WeightQuantizer

MODES = ("beta", "shifts", "shifts_bn")
# Values per layer kept for the fit: enough for the quantiles that matter at N ≤ 8.
SAMPLE = 1 << 18
_CENTRES = torch.linspace(-0.5, 0.5, 21)  # in units of the inputs' std, around their mean
_HALF_WIDTHS = torch.linspace(0.05, 3.0, 60)  # in units of the inputs' std


@dataclass
class ActivationFit:
    """One layer's calibration: its fitted shifts and scales, the relative error of the
    approximation, E[(x − Σβ A)²] / E[x²], and the share of inputs inside some base's STE
    window (where gradients pass), before and after."""

    name: str
    v: Tensor
    beta: Tensor
    error_before: float
    error_after: float
    window_before: float
    window_after: float
    bn_scale: float | None = None  # "shifts_bn": the factor its BatchNorm was rescaled by


class _Sorted:
    """A sorted sample with prefix sums: least-squares fits of threshold bases in O(log n)."""

    def __init__(self, x: Tensor) -> None:
        self.x = torch.sort(x.detach().flatten().double()).values
        self.n = self.x.numel()
        self.prefix = torch.cat([self.x.new_zeros(1), torch.cumsum(self.x, 0)])
        self.total = self.prefix[-1]
        self.energy = float((self.x * self.x).mean())

    def moments(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Gram matrices E[A Aᵀ] and E[x A] for thresholds ``t`` of shape (..., N)."""
        k = torch.searchsorted(self.x, t.double().contiguous())
        gram = 1.0 - 2.0 * (k[..., :, None] - k[..., None, :]).abs().double() / self.n
        rhs = (self.total - 2.0 * self.prefix[k]) / self.n
        return gram, rhs

    def fit_beta(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Least-squares β for thresholds ``t`` (..., N) and the mean squared error of each."""
        gram, rhs = self.moments(t)
        beta = (torch.linalg.pinv(gram, hermitian=True) @ rhs.unsqueeze(-1)).squeeze(-1)
        return beta, self.energy - (beta * rhs).sum(-1)

    def in_windows(self, t: Tensor, half: float = 0.5) -> float:
        """Share of the sample inside the union of the STE windows [t_n − half, t_n + half]."""
        edges = sorted((float(c) - half, float(c) + half) for c in t)
        merged: list[list[float]] = []
        for lo, hi in edges:
            if merged and lo <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], hi)
            else:
                merged.append([lo, hi])
        lo, hi = torch.tensor(merged, dtype=torch.float64).T.contiguous()
        inside = torch.searchsorted(self.x, hi, right=True) - torch.searchsorted(self.x, lo)
        return float(inside.sum()) / self.n

    def error(self, t: Tensor, beta: Tensor) -> float:
        """Mean squared error of Σ β_n sign(x − t_n) for the given (unfitted) β."""
        gram, rhs = self.moments(t)
        beta = beta.double()
        return float(self.energy - 2.0 * (beta * rhs).sum() + beta @ gram @ beta)


def fit_activation(x: Tensor, v: Tensor, beta: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """Fitted (v, β) of one ABC activation quantizer for inputs ``x`` (any shape), starting
    from its current ``v`` and ``beta``; see the module docstring for the modes."""
    _check_mode(mode)
    return _fit(_Sorted(x), v, beta, mode)


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"act_calibration must be one of {MODES} or null, got {mode!r}")


def _fit(sample: _Sorted, v: Tensor, beta: Tensor, mode: str) -> tuple[Tensor, Tensor]:
    """``fit_activation`` on an already sorted sample. ``"shifts"``: evenly spaced
    thresholds searched on the grid, the current ones among them."""
    t0 = 0.5 - v.detach().double()
    if mode == "beta":
        fitted, _ = sample.fit_beta(t0)
        return v.detach().clone(), fitted.to(beta.dtype)
    N = v.numel()
    mean, std = float(sample.x.mean()), max(float(sample.x.std()), 1e-12)
    centres = mean + std * _CENTRES.double()
    if N == 1:
        t = centres.view(-1, 1)
    else:
        steps = torch.linspace(-1.0, 1.0, N, dtype=torch.float64)
        half = std * _HALF_WIDTHS.double()
        t = (centres[:, None, None] + half[None, :, None] * steps).reshape(-1, N)
    t = torch.cat([t0.view(1, N), t])  # the current thresholds compete too
    betas, errors = sample.fit_beta(t)
    best = int(torch.argmin(errors))
    return (0.5 - t[best]).to(v.dtype), betas[best].to(beta.dtype)


def first_inputs(loader: Iterable, count: int) -> list[Tensor]:
    """The inputs of the first ``count`` (input, target) batches of ``loader``."""
    return [x for x, _ in itertools.islice(loader, max(count, 0))]  # reads no batch more


def _abc_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers (in registration order) whose input quantizer is ABC's."""
    return [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(getattr(m, "input_quantizer", None), ABCInput)
    ]


class _Captured(Exception):
    """Raised by the capture hook: the rest of the forward pass is not needed."""


@torch.no_grad()
def _inputs_of(model: nn.Module, layer: nn.Module, batches: list[Tensor]) -> Tensor:
    """What ``layer`` receives (before its input quantizer) on ``batches``, subsampled."""
    seen: list[Tensor] = []

    def hook(_module, args):
        seen.append(args[0].detach().flatten())
        raise _Captured

    handle = layer.register_forward_pre_hook(hook)
    try:
        for x in batches:
            try:
                model(x)
            except _Captured:
                pass
    finally:
        handle.remove()
    flat = torch.cat(seen)
    if flat.numel() > SAMPLE:
        gen = torch.Generator().manual_seed(0)
        flat = flat[torch.randperm(flat.numel(), generator=gen)[:SAMPLE]]
    return flat


@torch.no_grad()
def _sole_norms(model: nn.Module, batch: Tensor) -> dict[nn.Module, nn.Module]:
    """For each ABC layer whose input is the output of an affine BatchNorm that no other
    module reads: that BatchNorm (one forward pass with hooks; consumers outside modules
    are not seen, which is why the rescaling is checked on the network's output too)."""
    produced: dict[int, tuple[nn.Module, Tensor]] = {}
    readers: dict[int, list[nn.Module]] = {}

    def record_output(module, _args, out):
        produced[id(out)] = (module, out)  # the tensor is kept, so its id stays unique

    def record_input(module, args):
        for a in args:
            if isinstance(a, Tensor) and id(a) in produced:
                readers.setdefault(id(a), []).append(module)

    handles = []
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            handles.append(m.register_forward_hook(record_output))
        if isinstance(getattr(m, "input_quantizer", None), ABCInput) or (
            not list(m.children()) and not isinstance(m, InputQuantizer | WeightQuantizer)
        ):  # an ABC layer, or a leaf module other than a quantizer inside a layer
            handles.append(m.register_forward_pre_hook(record_input))
    try:
        model(batch)
    finally:
        for h in handles:
            h.remove()
    sole = {}
    for key, (norm, _) in produced.items():
        found = readers.get(key, [])
        if len(found) == 1 and isinstance(getattr(found[0], "input_quantizer", None), ABCInput):
            sole[found[0]] = norm
    return sole


def _rescale(norm: nn.Module, q: ABCInput, k: float) -> None:
    """Scale ``norm``'s output by k and the thresholds 0.5 − v of ``q`` with it."""
    norm.weight.mul_(k)
    norm.bias.mul_(k)
    q.v.copy_(0.5 - k * (0.5 - q.v))


def _bn_factor(t: Tensor, sample: _Sorted) -> float:
    """k that puts neighbouring thresholds 1 apart (one threshold: two input std to 1)."""
    spacing = float(t[1] - t[0]) if t.numel() > 1 else 2.0 * float(sample.x.std())
    return 1.0 / max(spacing, 1e-6)


def _same_output(a: Tensor, b: Tensor) -> bool:
    scale = float(a.abs().max()) or 1.0
    return (
        bool(torch.equal(a.argmax(1), b.argmax(1))) and float((a - b).abs().max()) <= 1e-3 * scale
    )


@torch.no_grad()
def calibrate_activations(
    model: nn.Module, batches: Iterable[Tensor], mode: str
) -> list[ActivationFit]:
    """Fit v and β of every ABC activation quantizer of ``model`` to its inputs on
    ``batches`` (input tensors), layer by layer in forward order; returns one
    :class:`ActivationFit` per layer. The model runs in training mode, as the first steps
    will (BatchNorm on batch statistics), with its running statistics left as they were."""
    _check_mode(mode)
    batches = list(batches)
    if not batches:
        raise ValueError("activation calibration needs at least one batch")
    fits = []
    with batch_statistics(model):
        sole = _sole_norms(model, batches[0]) if mode == "shifts_bn" else {}
        for name, layer in _abc_layers(model):
            q = layer.input_quantizer
            x = _inputs_of(model, layer, batches)
            sample = _Sorted(x)
            t0 = 0.5 - q.v.double()
            err0 = sample.error(t0, q.beta) / max(sample.energy, 1e-30)
            v, beta = _fit(sample, q.v, q.beta, mode)
            q.v.copy_(v)
            q.beta.copy_(beta)
            t1 = 0.5 - q.v.double()
            err1 = sample.error(t1, q.beta) / max(sample.energy, 1e-30)
            k = _bn_factor(t1, sample) if layer in sole else None
            if k is not None:
                reference = model(batches[0])
                _rescale(sole[layer], q, k)
                if not _same_output(reference, model(batches[0])):
                    _rescale(sole[layer], q, 1.0 / k)
                    k = None
            half = 0.5 if k is None else 0.5 / k  # the windows in the inputs' own units
            fits.append(
                ActivationFit(
                    name,
                    q.v.detach().clone(),
                    q.beta.detach().clone(),
                    err0,
                    err1,
                    sample.in_windows(t0),
                    sample.in_windows(t1, half),
                    k,
                )  # fmt: skip
            )
    return fits
