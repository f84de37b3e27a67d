"""Functional core of ABC-Net quantization: weight bases, activation bases, STEs.

Everything here is plain torch and knows nothing about training frameworks.

Weights (Lin et al. 2017, eq. 1-3):
    W ≈ Σ_m α_m B_m,   B_m = sign(W - mean(W) + u_m · std(W)),   u_m = -1 + (m-1)·2/(M-1)
    α = argmin ||vec(W) - [vec(B_1) … vec(B_M)] α||²   (least squares, no intercept)
Activations (eq. 6-7):
    R ≈ Σ_n β_n A_n,   A_n = 2·1[clip(R + v_n, 0, 1) ≥ 0.5] - 1
Gradients use straight-through estimators: identity through each weight base (so
∂c/∂W = Σ_m α_m ∂c/∂B_m with α held constant) and the clip window 1[0 ≤ R + v_n ≤ 1]
through each activation base.
"""

from __future__ import annotations

import contextlib
import logging
import math
import numbers
import os
import warnings

import torch
from torch import Tensor

SCOPES = ("layer", "channel")


def check_count(name: str, value: object, minimum: int) -> int:
    """``value`` as an int; ValueError naming ``name`` unless it is an integer >= minimum."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    value = int(value)
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return value


def weight_shifts(M: int) -> Tensor:
    """The M fixed shifts u_i = -1 + (i-1)·2/(M-1) of the paper (u_1 = 0 when M = 1)."""
    M = check_count("M", M, 1)
    if M == 1:
        return torch.zeros(1)
    return torch.linspace(-1.0, 1.0, M)


def _as_shifts(
    M: int, shifts: Tensor | list[float] | tuple[float, ...] | None, like: Tensor
) -> Tensor:
    if shifts is None:
        return weight_shifts(M).to(device=like.device, dtype=like.dtype)
    u = torch.as_tensor(shifts, dtype=like.dtype, device=like.device)
    if u.dim() != 1 or u.numel() != M:
        raise ValueError(f"shifts must hold exactly M={M} values, got shape {tuple(u.shape)}")
    return u


def sign_pm1(x: Tensor) -> Tensor:
    """sign() that maps 0 to +1, so every value is exactly ±1."""
    return torch.where(x >= 0, torch.ones_like(x), -torch.ones_like(x))


class _SignSTE(torch.autograd.Function):
    """±1 sign in the forward pass, identity gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        return sign_pm1(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        return grad


def sign_ste(x: Tensor) -> Tensor:
    """±1 sign with a straight-through (identity) gradient."""
    return _SignSTE.apply(x)


def _solve_alpha(B: Tensor, w: Tensor) -> Tensor:
    """Least-squares α for w ≈ Bᵀα, batched: B (..., M, K), w (..., K) -> α (..., M).

    Uses the pseudo-inverse of the M×M Gram matrix (in float64), which is the minimum-norm
    least-squares solution and stays finite when bases coincide (singular BᵀB).
    """
    G = B.double() @ B.double().transpose(-1, -2)  # (..., M, M)
    b = (B.double() @ w.double().unsqueeze(-1)).squeeze(-1)  # (..., M)
    alpha = (torch.linalg.pinv(G, hermitian=True) @ b.unsqueeze(-1)).squeeze(-1)
    return alpha.to(w.dtype)


def _stats(W: Tensor, scope: str) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened weights (G, K) and their mean/std (G, 1); G = 1 (layer) or C_out (channel)."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
    flat = W.reshape(1, -1) if scope == "layer" else W.reshape(W.shape[0], -1)
    mean = flat.mean(dim=1, keepdim=True)
    std = flat.std(dim=1, correction=0, keepdim=True)
    return flat, mean, std


def weight_bases(
    W: Tensor,
    M: int,
    shifts: Tensor | list[float] | None = None,
    scope: str = "layer",
) -> tuple[Tensor, Tensor]:
    """Binary bases and least-squares scales of a weight tensor.

    Returns ``B`` of shape (M, *W.shape) with values exactly ±1 and ``alpha`` of shape (M,)
    for ``scope="layer"`` (paper) or (M, C_out) for ``scope="channel"`` (statistics and
    regression per output filter). Gradients flow to ``W`` (and to ``shifts`` if it requires
    grad) through an identity straight-through estimator per base; ``alpha`` is detached.
    """
    M = check_count("M", M, 1)
    u = _as_shifts(M, shifts, W)
    flat, mean, std = _stats(W, scope)
    # z_m = W - mean + u_m·std, statistics held constant so ∂B_m/∂W is the plain STE.
    z = (flat - mean.detach()).unsqueeze(0) + u.view(M, 1, 1) * std.detach().unsqueeze(0)
    B = sign_ste(z)  # (M, G, K)
    with torch.no_grad():
        alpha = _solve_alpha(B.detach().transpose(0, 1), flat.detach())  # (G, M)
    alpha = alpha.transpose(0, 1)  # (M, G)
    if scope == "layer":
        alpha = alpha.reshape(M)
    return B.reshape(M, *W.shape), alpha


def expand_alpha(alpha: Tensor, weight_dim: int) -> Tensor:
    """View α, (M,) or (M, C_out), so that it broadcasts against bases of shape (M, *W.shape)."""
    if alpha.dim() == 1:
        return alpha.view(-1, *([1] * weight_dim))
    return alpha.view(alpha.shape[0], alpha.shape[1], *([1] * (weight_dim - 1)))


def fold_weight_bases(B: Tensor, alpha: Tensor) -> Tensor:
    """Σ_m α_m B_m: the single float weight equal to the weighted sum of the binary bases."""
    return (expand_alpha(alpha, B.dim() - 1) * B).sum(dim=0)


def weight_reconstruction_error(W: Tensor, M: int, scope: str = "layer") -> float:
    """Relative error ||W - Σα_m B_m|| / ||W|| of the M-base approximation."""
    with torch.no_grad():
        B, alpha = weight_bases(W, M, scope=scope)
        approx = fold_weight_bases(B, alpha)
        return float((W - approx).norm() / W.norm().clamp_min(1e-12))


# ------------------------------------------------- weights of many layers at once
#
# A training step quantizes every layer's weight; done layer by layer that is a dozen small
# operations per layer (statistics, bases, Gram matrix, solve, fold). The functions below
# do it for all layers of one kind together: the flattened weights are concatenated and
# every statistic is a segment reduction (a segment is a layer, or an output channel), so a
# step costs a fixed handful of large operations whatever the depth of the network.

FOLD_RULES = ("abc", "bwn", "sign")


class Segments:
    """Where each layer's flattened weight lies in the concatenation, and its segments.

    A segment is one layer (``scope="layer"``) or one output channel (``scope="channel"``);
    ``index`` (P,) gives each element's segment, ``layer`` (S,) each segment's layer.
    """

    def __init__(self, shapes: list[torch.Size], scope: str, device: torch.device) -> None:
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {SCOPES}, got {scope!r}")
        self.shapes = [torch.Size(s) for s in shapes]
        numels = [s.numel() for s in self.shapes]
        self.offsets = [sum(numels[:i]) for i in range(len(numels))]
        self.strides = [torch.empty(s, device="meta").stride() for s in self.shapes]
        if scope == "layer":
            lengths = numels
            layer = list(range(len(shapes)))
        else:
            lengths = [s.numel() // s[0] for s in self.shapes for _ in range(s[0])]
            layer = [i for i, s in enumerate(self.shapes) for _ in range(s[0])]
        self.count = len(lengths)
        self.layers = len(self.shapes)
        self.lengths = torch.tensor(lengths, device=device)
        self.ends = torch.cumsum(self.lengths, 0)  # each segment's end offset
        self.index = torch.repeat_interleave(torch.arange(self.count, device=device), self.lengths)
        self.layer = torch.tensor(layer, device=device)

    def sum(self, values: Tensor) -> Tensor:
        """Per-segment sums of ``values`` (..., P) -> (..., S)."""
        ends = self.ends if _scan_sums(values) else None
        return _segment_sum(values, self.index, self.count, ends)

    def concat(self, tensors: tuple[Tensor | None, ...], like: Tensor) -> Tensor:
        """The layers' tensors flattened into one (None: zeros): one copy op for all."""
        flat = like.new_empty(self.offsets[-1] + self.shapes[-1].numel())
        views = self.cut(flat)
        present = [i for i, t in enumerate(tensors) if t is not None]
        if len(present) < len(tensors):
            flat.zero_()
        torch._foreach_copy_([views[i] for i in present], [tensors[i] for i in present])
        return flat

    def cut(self, flat: Tensor) -> list[Tensor]:
        """The concatenation cut back into (views of) tensors of the layers' shapes."""
        return [
            flat.as_strided(s, st, flat.storage_offset() + o)
            for s, st, o in zip(self.shapes, self.strides, self.offsets, strict=True)
        ]


_segments_cache: dict[tuple, Segments] = {}


def segments_for(weights: list[Tensor], scope: str) -> Segments:
    """The (cached) ``Segments`` of a list of weights: built once per set of shapes."""
    key = (scope, weights[0].device, tuple(tuple(w.shape) for w in weights))
    seg = _segments_cache.get(key)
    if seg is None:
        seg = _segments_cache[key] = Segments([w.shape for w in weights], scope, weights[0].device)
    return seg


def _segment_sum(values: Tensor, index: Tensor, count: int, ends: Tensor | None = None) -> Tensor:
    """Per-segment sums of ``values`` (..., P) -> (..., count), segment of element k: index[k].

    ``ends`` None: scattered (``index_add``), the fast form on a CPU. ``ends`` (count,), the
    end offset of each segment (segments contiguous and in order): differences of a float64
    prefix sum, for a GPU, where scattering many elements into a few sums serialises on the
    atomic adds to the same addresses; no atomics, no host synchronisation.
    """
    if ends is None:
        return values.new_zeros(*values.shape[:-1], count).index_add_(-1, index, values)
    prefix = torch.nn.functional.pad(values.double().cumsum(-1), (1, 0))  # (..., P + 1)
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    return (prefix[..., ends] - prefix[..., starts]).to(values.dtype)


def base_ranks(u: Tensor) -> Tensor:
    """(L, M): the rank of each shift u_m of each layer in descending order (ties in order).

    B_m = sign(c + u_m·std) is a threshold of the same centred value c for every m, so a
    weight whose bases are +1 for exactly k of them has them +1 for the k ranks below k
    (float rounding keeps that order: it is monotone); equal shifts are +1 together."""
    return torch.argsort(torch.argsort(-u, dim=1, stable=True), dim=1)


def level_fit(counts: Tensor, sums: Tensor) -> Tensor:
    """Least-squares values of the M+1 levels of every segment, in closed form: (S, M+1).

    A weight at level k (k of its M bases +1) is quantized to v_k = Σ_m α_m b_km. Ordering
    α by rank (a_j), v_k = Σ_{j<k} a_j − Σ_{j≥k} a_j: the differences v_k − v_{k−1} = 2a_{k−1}
    are free and v_0 = −v_M is the only constraint. So the least-squares fit puts every
    filled interior level at its mean (sums / counts), and the two ends at ±t with
    t = (s_M − s_0)/(c_0 + c_M). Empty levels take the values that make ‖α‖ smallest (the
    pseudo-inverse's choice): linear between their filled neighbours, and across the ends
    through the antiperiodic extension v_{k+M} = −v_k when the ends are empty too. No
    matrix is inverted, so nothing waits for the device (``torch.linalg.pinv`` does).
    """
    M = counts.shape[1] - 1
    filled = counts > 0
    value = torch.where(filled, sums / counts.clamp_min(1), 0.0)
    ends = counts[:, 0] + counts[:, M]
    t = (sums[:, M] - sums[:, 0]) / ends.clamp_min(1)
    fixed = torch.cat([(ends > 0)[:, None], filled[:, 1:M], (ends > 0)[:, None]], 1)
    value = torch.cat([-t[:, None], value[:, 1:M], t[:, None]], 1)
    # levels -M .. 2M: level k - M and k + M hold -v_k
    ext_value = torch.cat([-value[:, :M], value, -value[:, 1:]], 1)
    ext_fixed = torch.cat([fixed[:, :M], fixed, fixed[:, 1:]], 1)
    pos = torch.arange(3 * M + 1, device=counts.device).expand_as(ext_fixed)
    prev = torch.where(ext_fixed, pos, -1).cummax(1).values
    nxt = torch.where(ext_fixed, pos, 3 * M + 1).flip(1).cummin(1).values.flip(1)
    p, q, k = prev[:, M : 2 * M + 1], nxt[:, M : 2 * M + 1], pos[:, M : 2 * M + 1]
    vp, vq = ext_value.gather(1, p), ext_value.gather(1, q)
    share = (k - p).to(vp.dtype) / (q - p).clamp_min(1).to(vp.dtype)
    return vp + share * (vq - vp)


def abc_fold_flat(
    flat: Tensor,
    u: Tensor,
    index: Tensor,
    layer: Tensor,
    lengths: Tensor,
    ends: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Σ_m α_m B_m of every segment at once, without autograd.

    ``flat`` (P,) concatenated weights, ``u`` (L, M) each layer's shifts, ``index`` (P,) each
    element's segment, ``layer`` (S,) each segment's layer, ``lengths`` (S,) its element
    count; ``ends`` as in ``_segment_sum`` (None: scattered sums). Returns the folded flat
    weights (P,), α (S, M) and std (S,). An element's M bases follow from k, the number of
    them that are +1 (``base_ranks``), so the least-squares fit of each segment needs only
    the count and the weight sum of its elements at each k (``level_fit``), with O(M·P) work
    and no (M, P) tensor.
    """
    M, count = u.shape[1], lengths.shape[0]
    n = lengths.to(flat.dtype)
    centred = flat - (_segment_sum(flat, index, count, ends) / n)[index]
    std = (_segment_sum(centred * centred, index, count, ends) / n).sqrt()
    shift = (u[layer] * std.unsqueeze(1)).t()  # (M, S): u_m · std
    # k: how many of B_m = sign((W - mean) + u_m·std) are +1 (the arithmetic of weight_bases)
    k = torch.zeros_like(index)
    for m in range(M):
        k = k + (centred + shift[m][index] >= 0).to(index.dtype)
    if ends is None:
        cell = index * (M + 1) + k  # (segment, k) of each element
        hist = flat.new_zeros(count * (M + 1), dtype=torch.float64)
        counts = hist.index_add(0, cell, torch.ones_like(flat, dtype=torch.float64))
        sums = hist.index_add(0, cell, flat.double())
        counts, sums = counts.view(count, M + 1), sums.view(count, M + 1)
    else:
        at = k.unsqueeze(0) == torch.arange(M + 1, device=k.device).unsqueeze(1)  # (M+1, P)
        both = torch.cat([at.double(), at * flat.double()])
        counts, sums = _segment_sum(both, index, count, ends).view(2, M + 1, count).transpose(1, 2)
    values = level_fit(counts, sums)  # (S, M+1)
    a = (values[:, 1:] - values[:, :-1]) / 2  # α in rank order
    alpha = a.gather(1, base_ranks(u)[layer]).to(flat.dtype)
    folded = values.to(flat.dtype).reshape(-1)[index * (M + 1) + k]
    return folded, alpha, std


SEGMENT_SUMS = ("auto", "scan", "scatter")
_segment_sums = {"mode": os.environ.get("ABC_LAB_SEGMENT_SUMS", "auto")}


@contextlib.contextmanager
def segment_sums(mode: str):
    """How ``fold_layers`` sums over segments inside the block: "scatter" (``index_add``),
    "scan" (prefix-sum differences) or "auto" (scatter on a CPU, scan on a GPU, where
    scattering into a few sums serialises on atomic adds); ``$ABC_LAB_SEGMENT_SUMS`` sets
    the default."""
    if mode not in SEGMENT_SUMS:
        raise ValueError(f"segment sums must be one of {SEGMENT_SUMS}, got {mode!r}")
    before, _segment_sums["mode"] = _segment_sums["mode"], mode
    try:
        yield
    finally:
        _segment_sums["mode"] = before


def _scan_sums(flat: Tensor) -> bool:
    mode = _segment_sums["mode"]
    return mode == "scan" or (mode != "scatter" and flat.device.type != "cpu")


class _FoldLayers(torch.autograd.Function):
    """Quantized weights of several layers in one forward and one backward node.

    rule "abc": Σ_m α_m B_m; ∂c/∂W = Σ_m α_m ∂c/∂W_q per segment (identity STE per base,
    α held constant) and ∂c/∂u_m = α_m · std · Σ ∂c/∂W_q for the shifts.
    rule "bwn": sign(W)·mean|W| per output channel; ∂c/∂W = mean|W| · ∂c/∂W_q.
    rule "sign": sign(W); ∂c/∂W = 1[|W| ≤ 1] · ∂c/∂W_q (BNN).
    """

    @staticmethod
    def forward(ctx, rule: str, seg: Segments, u: Tensor | None, *weights: Tensor):  # type: ignore[override]
        flat = seg.concat(weights, weights[0])
        ctx.rule, ctx.seg = rule, seg
        if rule == "abc":
            assert u is not None
            ctx.u_dtype = u.dtype
            fold = _compiled(abc_fold_flat)
            ends = seg.ends if _scan_sums(flat) else None
            folded, alpha, std = fold(
                flat, u.to(flat.dtype), seg.index, seg.layer, seg.lengths, ends
            )
            ctx.save_for_backward(alpha, std)
        elif rule == "bwn":
            scale = (seg.sum(flat.abs()) / seg.lengths.to(flat.dtype))[seg.index]
            folded = torch.where(flat >= 0, scale, -scale)
            ctx.save_for_backward(scale)
        else:
            folded = torch.where(flat >= 0, 1.0, -1.0).to(flat.dtype)
            ctx.save_for_backward(flat)
        return tuple(seg.cut(folded))

    @staticmethod
    def backward(ctx, *grads: Tensor):  # type: ignore[override]
        seg: Segments = ctx.seg
        saved = ctx.saved_tensors
        g = seg.concat(grads, saved[0])
        grad_u = None
        if ctx.rule == "abc":
            alpha, std = saved
            grad_flat = g * alpha.sum(1)[seg.index]
            if ctx.needs_input_grad[2]:
                per_seg = alpha * (std * seg.sum(g)).unsqueeze(1)  # (S, M)
                grad_u = per_seg.new_zeros(seg.layers, alpha.shape[1])
                grad_u = grad_u.index_add_(0, seg.layer, per_seg).to(ctx.u_dtype)
        elif ctx.rule == "bwn":
            grad_flat = g * saved[0]
        else:
            grad_flat = torch.where(saved[0].abs() <= 1, g, 0.0)
        return None, None, grad_u, *seg.cut(grad_flat)


def fold_layers(
    rule: str, weights: list[Tensor], shifts: list[Tensor] | None = None, scope: str = "layer"
) -> list[Tensor]:
    """Quantized weights of several layers with one set of large operations (see
    ``_FoldLayers``): "abc" gives the value of ``fold_weight_bases(*weight_bases(W, M,
    shifts, scope))`` for each W (M = len of its shifts), "bwn" sign(W)·mean|W| per output
    filter, "sign" sign(W); with the same straight-through gradients as the per-layer forms."""
    if rule not in FOLD_RULES:
        raise ValueError(f"rule must be one of {FOLD_RULES}, got {rule!r}")
    if rule == "bwn":
        scope = "channel"
    seg = segments_for(weights, scope if rule != "sign" else "layer")
    u = None
    if rule == "abc":
        if shifts is None or len(shifts) != len(weights):
            raise ValueError("rule 'abc' needs one shift vector per weight")
        u = shifts[0].unsqueeze(0) if len(shifts) == 1 else torch.stack(shifts)
    return list(_FoldLayers.apply(rule, seg, u, *weights))


# ---------------------------------------------------------------- activations


def gaussian_beta(v: Tensor) -> Tensor:
    """β minimising E[(x − Σ_n β_n A_n(x))²] for x ~ N(0, 1), with A_n = sign(x − t_n) and
    thresholds t_n = 0.5 − v_n: the least-squares fit of the activation bases to the
    standardised input BatchNorm hands them at initialisation.

    Closed form: E[A_i A_j] = 1 − 2|Φ(t_i) − Φ(t_j)| and E[x A_n] = 2φ(t_n); solved with the
    pseudo-inverse in float64 (coinciding thresholds stay finite).
    """
    t = (0.5 - v.detach()).double()
    cdf = 0.5 * (1.0 + torch.erf(t / math.sqrt(2.0)))
    pdf = torch.exp(-0.5 * t * t) / math.sqrt(2.0 * math.pi)
    gram = 1.0 - 2.0 * (cdf[:, None] - cdf[None, :]).abs()
    return (torch.linalg.pinv(gram) @ (2.0 * pdf)).to(v.dtype)


def activation_shifts(N: int, center: float = 0.5, spread: float = 1.0) -> Tensor:
    """Initial activation shifts v_n = center + spread·linspace(-1, 1, N) (center alone if N = 1).

    The binarisation threshold of base n is 0.5 - v_n, so the default center 0.5 puts the
    thresholds symmetrically around 0 and ``spread`` sets how far apart they start. The
    shifts must differ: identical v_n would make the N bases identical forever.
    """
    N = check_count("N", N, 1)
    if N == 1:
        return torch.full((1,), float(center))
    if spread <= 0:
        raise ValueError(f"act_shift_spread must be > 0 when N > 1, got {spread}")
    return center + spread * torch.linspace(-1.0, 1.0, N)


def _check_act_params(v: Tensor, beta: Tensor) -> None:
    if v.dim() != 1 or beta.shape != v.shape:
        raise ValueError(
            f"v and beta must be 1-D tensors of the same length N, got {tuple(v.shape)} and "
            f"{tuple(beta.shape)}"
        )


def activation_edges(v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-base edges in x: A_n = +1 iff x ≥ 0.5 - v_n; the STE window is -v_n ≤ x ≤ 1 - v_n.

    Comparing x with edges computed once from v is the paper's clip(x + v, 0, 1) ≥ 0.5 and
    0 ≤ x + v ≤ 1, and lets the fused and per-base paths agree bit for bit.
    """
    return -v, 0.5 - v, 1.0 - v


def _act_forward(x: Tensor, v: Tensor, beta: Tensor) -> Tensor:
    """Σ_n β_n A_n, written as plain tensor ops so torch.compile can fuse it into one pass."""
    _, mid, _ = activation_edges(v)
    out = torch.where(x >= mid[0], beta[0], -beta[0])
    for n in range(1, v.shape[0]):
        out = out + torch.where(x >= mid[n], beta[n], -beta[n])
    return out


def _act_backward(
    x: Tensor, grad: Tensor, v: Tensor, beta: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of Σ_n β_n A_n: to x (window sum), to each v_n and β_n (reductions)."""
    lo, mid, hi = activation_edges(v)
    window_sum = torch.zeros_like(x)
    gv, gb = [], []
    for n in range(v.shape[0]):
        window = (x >= lo[n]) & (x <= hi[n])
        window_sum = window_sum + torch.where(window, beta[n], 0.0)
        gv.append(beta[n] * torch.where(window, grad, 0.0).sum())
        gb.append(torch.where(x >= mid[n], grad, -grad).sum())
    return grad * window_sum, torch.stack(gv), torch.stack(gb)


_KERNEL_NAMES = ("auto", "compiled", "eager")
_kernel: dict = {"name": os.environ.get("ABC_LAB_KERNEL", "auto"), "compiled": {}}


def set_kernel(name: str) -> None:
    """Choose how the fused activations run: "compiled" (torch.compile: one fused pass per
    direction, ~N× fewer memory passes; on a CPU in training, a BatchNorm feeding a binarised
    input runs fused with it in C++, see ``fused_norm``), "eager" (plain ops, no compile or
    build delay) or "auto" (as "compiled", falling back to eager where compilation is
    unavailable)."""
    if name not in _KERNEL_NAMES:
        raise ValueError(f"kernel must be one of {_KERNEL_NAMES}, got {name!r}")
    _kernel["name"] = name


def kernel_name() -> str:
    """The kernel setting in force ("auto", "compiled" or "eager"; see ``set_kernel``)."""
    return _kernel["name"]


def _compiled(fn):
    """``fn`` as a torch.compile'd kernel (cached), or ``fn`` itself under the eager kernel."""
    if _kernel["name"] == "eager" or torch.compiler.is_compiling():
        return fn  # inside a compiled model the caller's graph fuses it anyway
    done = _kernel["compiled"].get(fn)
    if done is None:
        # torch's C++ toolchain probe warns about CUDA on CPU-only machines: not our concern
        logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
        try:
            done = _kernel["compiled"][fn] = torch.compile(fn, dynamic=True)
        except Exception as err:  # pragma: no cover - platform without a compiler
            if _kernel["name"] == "compiled":
                raise
            warnings.warn(f"torch.compile unavailable ({err}); using eager kernels", stacklevel=2)
            _kernel["name"] = "eager"
            return fn
    return done


class _ABCActivation(torch.autograd.Function):
    """Fused Σ_n β_n A_n with the clip-window STE; stores x only, never the N bases."""

    @staticmethod
    def forward(ctx, x: Tensor, v: Tensor, beta: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x, v, beta)
        return _compiled(_act_forward)(x, v, beta)  # grad mode is off here

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        x, v, beta = ctx.saved_tensors
        with torch.no_grad():
            gx, gv, gb = _compiled(_act_backward)(x, grad.contiguous(), v, beta)
        return gx, gv, gb


def abc_activation(x: Tensor, v: Tensor, beta: Tensor) -> Tensor:
    """Folded binary activation Σ_n β_n H_{v_n}(x), computed without materialising N bases."""
    _check_act_params(v, beta)
    if v.dtype != x.dtype:
        v = v.to(x.dtype)
    if beta.dtype != x.dtype:
        beta = beta.to(x.dtype)
    return _ABCActivation.apply(x, v, beta)


class _StepSTE(torch.autograd.Function):
    """One activation base H_v(x) = 2·1[x + v ≥ 0.5] - 1, gradient 1[0 ≤ x + v ≤ 1] to x and v."""

    @staticmethod
    def forward(ctx, x: Tensor, v: Tensor) -> Tensor:  # type: ignore[override]
        lo, mid, hi = activation_edges(v)
        ctx.save_for_backward((x >= lo) & (x <= hi))
        return sign_pm1(x - mid)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (window,) = ctx.saved_tensors
        g = grad * window.to(grad.dtype)
        return g, g.sum().reshape(1)


def activation_bases(x: Tensor, v: Tensor, beta: Tensor) -> tuple[Tensor, Tensor]:
    """The N activation bases A_n = H_{v_n}(x), shape (N, *x.shape), and their scales β.

    Each base carries the clip-window STE, so gradients reach x and v through it and β
    through the caller's weighted sum; ``abc_activation`` is the memory-light fused form.
    """
    _check_act_params(v, beta)
    A = torch.stack([_StepSTE.apply(x, v[n : n + 1]) for n in range(v.numel())])
    return A, beta


def _sign_forward(x: Tensor) -> Tensor:
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def _sign_window_backward(x: Tensor, grad: Tensor) -> Tensor:
    return torch.where(x.abs() <= 1, grad, 0.0)


class _SignWindowSTE(torch.autograd.Function):
    """±1 sign with the BNN straight-through window: gradient passes where |x| ≤ 1.

    Each direction is one fused (compiled) pass over x, like the ABC activation.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(x)
        return _compiled(_sign_forward)(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:  # type: ignore[override]
        (x,) = ctx.saved_tensors
        with torch.no_grad():
            return _compiled(_sign_window_backward)(x, grad.contiguous())


def sign_window_ste(x: Tensor) -> Tensor:
    """sign(x) in {-1,+1} with gradient 1[|x| ≤ 1] (Courbariaux/Hubara BNN, XNOR-Net)."""
    return _SignWindowSTE.apply(x)
