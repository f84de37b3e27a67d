"""BatchNorm fused with the binarised input of the layer it feeds (CPU, training mode).

In the binary-net block order (BatchNorm → binarise → conv) the BatchNorm output is read
once, by the binariser. ``norm_binarize`` computes both in one C++ pass per direction
(``csrc/bn_binarize.cpp``): the statistics in one read of x, the binarised output in a
second, and a backward that recomputes the BatchNorm output from x instead of storing it.
That removes a write and a read of every element in each direction, which is most of what a
binary training step costs beyond fp on a CPU.

It applies to a ``BatchNorm2d`` in training mode on a float32 (N, C, H, W) CPU tensor feeding
an ``ABCInput`` (N ≤ 8) or ``SignInput``; everything else (eval mode, GPU, other dtypes,
the ``eager`` kernel setting, a model being compiled) takes the separate operations. The
running statistics are updated as ``nn.BatchNorm2d`` updates them. Where the kernels cannot
be built, one line says so and the separate operations run.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor, nn

from ..native_build import cache_dir, load_extension
from . import functional as QF
from .quantizers import ABCInput, InputQuantizer, SignInput

SOURCE = Path(__file__).with_name("csrc") / "bn_binarize.cpp"
MAX_BASES = 8  # the kernels' limit on N

_state: dict[str, object] = {"module": None, "tried": False, "error": None}
_switch = {"on": os.environ.get("ABC_LAB_FUSED_NORM", "1") != "0"}


@contextlib.contextmanager
def enabled(on: bool) -> Iterator[None]:
    """Within the block, fuse (True) or run BatchNorm and binarisation apart (False); the
    default is on, ``ABC_LAB_FUSED_NORM=0`` turns it off (for comparisons)."""
    before, _switch["on"] = _switch["on"], bool(on)
    try:
        yield
    finally:
        _switch["on"] = before


def build_dir() -> Path:
    """Where the compiled kernels are cached (``$ABC_LAB_QUANT_BUILD``)."""
    return cache_dir("ABC_LAB_QUANT_BUILD", "quant")


def kernels() -> ModuleType | None:
    """The compiled kernels, built on first use; None (after one line) where impossible."""
    if not _state["tried"]:
        _state["tried"] = True
        try:
            try:
                _state["module"] = load_extension(
                    "abc_lab_bn_binarize", SOURCE,
                    ["-O3", "-march=native", "-ffp-contract=off"], build_dir(),
                )  # fmt: skip
            except Exception:  # a compiler without -march=native
                _state["module"] = load_extension(
                    "abc_lab_bn_binarize", SOURCE, ["-O3", "-ffp-contract=off"], build_dir()
                )
        except Exception as err:  # no compiler, no headers
            _state["error"] = (str(err).strip().splitlines() or [type(err).__name__])[-1][:160]
            print(
                f"abc-lab: fused BatchNorm kernels unavailable ({_state['error']}); "
                "running BatchNorm and binarisation separately",
                file=sys.stderr,
            )
    return _state["module"]  # type: ignore[return-value]


def applies(norm: nn.Module, quantizer: InputQuantizer | None, x: Tensor) -> bool:
    """Whether ``norm_binarize`` handles this BatchNorm, quantizer and input."""
    return (
        _switch["on"]
        and isinstance(norm, nn.BatchNorm2d)
        and norm.training
        and (
            isinstance(quantizer, SignInput)
            or (isinstance(quantizer, ABCInput) and quantizer.N <= MAX_BASES)
        )
        and x.dim() == 4
        and x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.numel() > x.shape[1]  # BatchNorm's own error otherwise: one value per channel
        and all(
            t is None or t.dtype == torch.float32
            for t in (norm.weight, norm.bias, norm.running_mean, *quantizer.parameters())
        )
        and QF.kernel_name() != "eager"
        and not torch.compiler.is_compiling()
        and kernels() is not None
    )


class _NormBinarize(torch.autograd.Function):
    """Σ_k β_k s_k(BN(x)) and its gradients to x, the BatchNorm's γ and b, and v, β."""

    @staticmethod
    def forward(ctx, x, weight, bias, v, beta, norm):  # type: ignore[override]
        momentum = -1.0 if norm.momentum is None else float(norm.momentum)
        out, saved = kernels().forward(
            x, weight, bias, norm.running_mean, norm.running_var, norm.num_batches_tracked,
            momentum, float(norm.eps), v, beta,
        )  # fmt: skip
        ctx.save_for_backward(x, saved, weight, bias, v, beta)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, saved, weight, bias, v, beta = ctx.saved_tensors
        gx, g_weight, g_bias, g_v, g_beta = kernels().backward(
            x, grad, saved, weight, bias, v, beta
        )
        return gx, g_weight, g_bias, g_v, g_beta, None


def norm_binarize(norm: nn.BatchNorm2d, quantizer: InputQuantizer, x: Tensor) -> Tensor:
    """``quantizer(norm(x))`` in one pass per direction (see the module's docstring); call
    only where ``applies(norm, quantizer, x)``."""
    abc = isinstance(quantizer, ABCInput)
    return _NormBinarize.apply(
        x.contiguous(),
        norm.weight,
        norm.bias,
        quantizer.v if abc else None,
        quantizer.beta if abc else None,
        norm,
    )
