"""Quantizers: small named modules that binarise a weight or an input tensor.

A weight quantizer maps a float weight W to binary bases and scales, ``decompose(W) ->
(B, alpha)`` with B of shape (M, *W.shape) and alpha of shape (M,) or (M, C_out); its
forward pass returns the folded weight Σ_m α_m B_m. An input (activation) quantizer
maps x to ``decompose(x) -> (A, beta)`` with A of shape (N, *x.shape) and its forward
pass returns the folded activation Σ_n β_n A_n, fused where that saves memory.
``bits`` is the number of binary bases a value is stored or computed with (32 = float).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from . import functional as QF


class WeightQuantizer(nn.Module):
    """Base class: a weight expressed as Σ_m α_m B_m with B_m ∈ {-1,+1}."""

    alias = "weight"
    bits = 32
    scope = "layer"

    def decompose(self, W: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def forward(self, W: Tensor) -> Tensor:
        B, alpha = self.decompose(W)
        return QF.fold_weight_bases(B, alpha)

    def scale_count(self, W: Tensor) -> int:
        """How many float scales the layer stores besides the bits."""
        return self.bits * (W.shape[0] if self.scope == "channel" else 1)

    def batch_key(self) -> tuple | None:
        """Quantizers with equal keys fold their weights together in ``fold_many`` (one set
        of large operations for all layers of a model); None: each layer on its own."""
        return None

    def fold_many(self, quantizers: Sequence[WeightQuantizer], weights: list[Tensor]):
        """Folded weights of several layers whose quantizers share this one's ``batch_key``."""
        return [q(w) for q, w in zip(quantizers, weights, strict=True)]


BNN_SCALES = ("none", "fan_in")


class SignWeight(WeightQuantizer):
    """BNN weights: sign(W), STE with the |W| ≤ 1 window. ``scale="none"``: no scale at all
    (BNN as published); ``"fan_in"``: sign(W)/√fan_in, one constant per layer that depends on
    the layer's shape only (not learned, not computed from W). BNN normalises each binary
    layer's output with the BatchNorm that follows it; in the XNOR block order (BatchNorm →
    binarise → conv → ReLU) nothing does, and an unscaled binary conv sums fan_in terms of ±1."""

    alias = "sign"
    bits = 1

    def __init__(self, scale: str = "none") -> None:
        super().__init__()
        if scale not in BNN_SCALES:
            raise ValueError(f"bnn_scale must be one of {BNN_SCALES}, got {scale!r}")
        self.scale = scale

    def constant(self, W: Tensor) -> float:
        """The layer's fixed scale: 1, or 1/√fan_in (fan_in: weights per output unit)."""
        return 1.0 if self.scale == "none" else 1.0 / math.sqrt(W[0].numel())

    def decompose(self, W: Tensor) -> tuple[Tensor, Tensor]:
        alpha = torch.full((1,), self.constant(W), dtype=W.dtype, device=W.device)
        return QF.sign_window_ste(W).unsqueeze(0), alpha

    def forward(self, W: Tensor) -> Tensor:
        c, signs = self.constant(W), QF.sign_window_ste(W)
        return signs if c == 1.0 else signs * c

    def scale_count(self, W: Tensor) -> int:
        return 0 if self.scale == "none" else 1  # the constant, stored beside the bits

    def batch_key(self) -> tuple | None:
        return ("sign", self.scale)

    def fold_many(self, quantizers: Sequence[WeightQuantizer], weights: list[Tensor]):
        folded = QF.fold_layers("sign", weights)
        if self.scale == "none":
            return folded
        return [f * self.constant(w) for f, w in zip(folded, weights, strict=True)]

    def extra_repr(self) -> str:
        return "" if self.scale == "none" else f"scale={self.scale}"


class ScaledSignWeight(WeightQuantizer):
    """XNOR-Net / BWN weights: sign(W) · mean(|W|) per output filter, identity STE."""

    alias = "bwn"
    bits = 1
    scope = "channel"

    def decompose(self, W: Tensor) -> tuple[Tensor, Tensor]:
        alpha = W.detach().abs().reshape(W.shape[0], -1).mean(dim=1).unsqueeze(0)  # (1, C_out)
        return QF.sign_ste(W).unsqueeze(0), alpha

    def forward(self, W: Tensor) -> Tensor:
        return QF.fold_layers("bwn", [W])[0]

    def batch_key(self) -> tuple | None:
        return ("bwn",)

    def fold_many(self, quantizers: Sequence[WeightQuantizer], weights: list[Tensor]):
        return QF.fold_layers("bwn", weights)


class ABCWeight(WeightQuantizer):
    """ABC-Net weights: M shifted-sign bases with least-squares scales (per layer or channel)."""

    alias = "abc"

    def __init__(
        self,
        M: int = 3,
        shifts: Sequence[float] | None = None,
        scope: str = "layer",
        trainable_shifts: bool = False,
    ) -> None:
        super().__init__()
        self.M = QF.check_count("M", M, 1)
        if scope not in QF.SCOPES:
            raise ValueError(f"alpha_scope must be one of {QF.SCOPES}, got {scope!r}")
        self.scope = scope
        self.bits = self.M
        u = (
            QF.weight_shifts(self.M)
            if shifts is None
            else torch.as_tensor(shifts, dtype=torch.float32)
        )
        if u.dim() != 1 or u.numel() != self.M:
            raise ValueError(
                f"shifts must hold exactly M={self.M} values, got {list(u.reshape(-1).tolist())}"
            )
        if trainable_shifts:
            self.shifts = nn.Parameter(u.clone())
        else:
            self.register_buffer("shifts", u.clone())

    def decompose(self, W: Tensor) -> tuple[Tensor, Tensor]:
        return QF.weight_bases(W, self.M, shifts=self.shifts.to(W.dtype), scope=self.scope)

    def forward(self, W: Tensor) -> Tensor:
        """Σ_m α_m B_m without materialising the bases as a separate tensor per base."""
        return QF.fold_layers("abc", [W], [self.shifts], self.scope)[0]

    def batch_key(self) -> tuple | None:
        return ("abc", self.M, self.scope)

    def fold_many(self, quantizers: Sequence[WeightQuantizer], weights: list[Tensor]):
        shifts = [q.shifts for q in quantizers]  # type: ignore[attr-defined]
        return QF.fold_layers("abc", weights, shifts, self.scope)

    def extra_repr(self) -> str:
        trainable = isinstance(self.shifts, nn.Parameter)
        return f"M={self.M}, scope={self.scope}, trainable_shifts={trainable}"


class InputQuantizer(nn.Module):
    """Base class: an input expressed as Σ_n β_n A_n with A_n ∈ {-1,+1}."""

    alias = "input"
    bits = 1

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError


class SignInput(InputQuantizer):
    """BNN / XNOR-Net activations: sign(x) with the |x| ≤ 1 straight-through window."""

    alias = "sign"

    def forward(self, x: Tensor) -> Tensor:
        return QF.sign_window_ste(x)

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return QF.sign_window_ste(x).unsqueeze(0), torch.ones(1, dtype=x.dtype, device=x.device)


class ABCInput(InputQuantizer):
    """ABC-Net activations: N shifted binarisations with trainable shifts v and scales β.

    v starts spread evenly (``activation_shifts``) so the N bases differ; β starts at
    ``beta_init``: None = 1/N (the folded activation lies in [-1, 1] for any N), a number,
    or ``"lsq"`` (``gaussian_beta``: the least-squares fit to a standard-normal input).
    """

    alias = "abc"

    def __init__(
        self,
        N: int = 3,
        shift_center: float = 0.5,
        shift_spread: float = 1.0,
        beta_init: float | str | None = None,
    ) -> None:
        super().__init__()
        self.N = QF.check_count("N", N, 1)
        self.bits = self.N
        self.v = nn.Parameter(QF.activation_shifts(self.N, shift_center, shift_spread))
        if beta_init == "lsq":
            beta = QF.gaussian_beta(self.v)
        else:
            beta = torch.full((self.N,), 1.0 / self.N if beta_init is None else float(beta_init))
        self.beta = nn.Parameter(beta)

    def forward(self, x: Tensor) -> Tensor:
        return QF.abc_activation(x, self.v, self.beta)

    def decompose(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return QF.activation_bases(x, self.v.to(x.dtype), self.beta.to(x.dtype))

    def extra_repr(self) -> str:
        return f"N={self.N}"
