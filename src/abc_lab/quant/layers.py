"""Quantized drop-in layers: ``QuantConv2d`` / ``QuantLinear`` and the ABC-Net flavours.

Training runs ONE float operation on the folded weight Σ_m α_m B_m and the folded input
Σ_n β_n A_n. Convolution and linear maps are bilinear, so this equals exactly the
Σ_m Σ_n α_m β_n op(B_m, A_n) that a bitwise engine executes as M·N binary operations;
``forward_reference`` computes that sum literally and is used to prove the equivalence.
(With padding, the identity holds for zero padding of the folded input; an engine that
pads binary inputs with ±1 has to correct the border.)
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.modules import module as _torch_module

from . import fused_norm
from .quantizers import ABCInput, ABCWeight, InputQuantizer, WeightQuantizer
from .registry import QuantConfig


class _QuantMixin:
    """Shared logic: quantize the kernel and the input, then run the layer's own op."""

    kernel_quantizer: WeightQuantizer | None
    input_quantizer: InputQuantizer | None
    weight: Tensor
    bias: Tensor | None

    def _init_quantizers(
        self, kernel_quantizer: WeightQuantizer | None, input_quantizer: InputQuantizer | None
    ) -> None:
        self.kernel_quantizer = kernel_quantizer
        self.input_quantizer = input_quantizer
        self.reference = False  # True: run the literal M·N binary operations (slow, for checks)

    def _op(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        raise NotImplementedError

    def _channel_view(self, t: Tensor, out: Tensor) -> Tensor:
        """Reshape a per-output-channel vector so it broadcasts over this layer's output."""
        return t.view(1, -1, *([1] * (out.dim() - 2)))

    def quantized_weight(self) -> Tensor:
        return self.weight if self.kernel_quantizer is None else self.kernel_quantizer(self.weight)

    def forward(self, x: Tensor) -> Tensor:
        if self.reference:
            return self.forward_reference(x)
        if self.input_quantizer is not None:
            x = self.input_quantizer(x)
        return self._op_binarised(x)

    def _op_binarised(self, x: Tensor) -> Tensor:
        """The layer's op on an already quantized input, with this step's folded weight."""
        w = self.__dict__.get("_step_weight")  # set for one model forward by fold_model_weights
        return self._op(x, self.quantized_weight() if w is None else w, self.bias)

    def forward_from_norm(self, norm: nn.Module, x: Tensor) -> Tensor:
        """``self(norm(x))``. Where the normalisation is a BatchNorm in training mode on a CPU,
        it runs fused with this layer's input binarisation (``fused_norm``); modules with
        hooks take the separate calls, so the hooks see what they expect."""
        if (
            self.reference
            or _hooked(self, norm)
            or not fused_norm.applies(norm, self.input_quantizer, x)
        ):
            return self(norm(x))
        return self._op_binarised(
            fused_norm.norm_binarize(norm, self.input_quantizer, x)  # type: ignore[arg-type]
        )

    def forward_reference(self, x: Tensor) -> Tensor:
        """Σ_m Σ_n α_m β_n op(B_m, A_n) + bias, as M·N separate binary operations."""
        if self.kernel_quantizer is None:
            B, alpha = self.weight.unsqueeze(0), None
        else:
            B, alpha = self.kernel_quantizer.decompose(self.weight)
        if self.input_quantizer is None:
            A, beta = x.unsqueeze(0), None
        else:
            A, beta = self.input_quantizer.decompose(x)
        out = None
        for m in range(B.shape[0]):
            for n in range(A.shape[0]):
                term = self._op(A[n], B[m], None)
                if beta is not None:
                    term = beta[n] * term
                if alpha is not None:
                    a = alpha[m]
                    term = a * term if a.dim() == 0 else self._channel_view(a, term) * term
                out = term if out is None else out + term
        if self.bias is not None:
            out = out + self._channel_view(self.bias, out)
        return out

    def extra_quant_repr(self) -> str:
        k = self.kernel_quantizer.alias if self.kernel_quantizer is not None else "fp"
        i = self.input_quantizer.alias if self.input_quantizer is not None else "fp"
        return f", kernel={k}, input={i}"


def _hooked(*modules: nn.Module) -> bool:
    """Whether a forward hook (global or on one of ``modules``) would see these calls."""
    if _torch_module._global_forward_hooks or _torch_module._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in modules)


def fold_model_weights(model: nn.Module, *_: object) -> None:
    """Quantize the weights of all of ``model``'s quantized layers for the coming forward pass,
    those with equal quantizer settings together (``WeightQuantizer.fold_many``): a fixed
    handful of large operations per step instead of a dozen small ones per layer. Registered
    as a forward pre-hook by ``quantize_model``; ``release_model_weights`` drops them again."""
    groups: dict[tuple, list[_QuantMixin]] = {}
    for m in model.modules():
        if isinstance(m, _QuantMixin) and m.kernel_quantizer is not None and not m.reference:
            key = m.kernel_quantizer.batch_key()
            if key is not None:
                groups.setdefault((type(m.kernel_quantizer), key), []).append(m)
    for layers in groups.values():
        quantizers = [m.kernel_quantizer for m in layers]
        folded = quantizers[0].fold_many(quantizers, [m.weight for m in layers])
        for m, w in zip(layers, folded, strict=True):
            m.__dict__["_step_weight"] = w


def release_model_weights(model: nn.Module, *_: object) -> None:
    """Forget the weights ``fold_model_weights`` prepared (forward hook): the next pass, or a
    layer called on its own, quantizes the updated weights again."""
    for m in model.modules():
        if isinstance(m, _QuantMixin):
            m.__dict__.pop("_step_weight", None)


class QuantConv2d(_QuantMixin, nn.Conv2d):
    """``nn.Conv2d`` with optional ``kernel_quantizer`` and ``input_quantizer`` (Larq style)."""

    def __init__(
        self,
        *args,
        kernel_quantizer: WeightQuantizer | None = None,
        input_quantizer: InputQuantizer | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_quantizers(kernel_quantizer, input_quantizer)

    def _op(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        return self._conv_forward(x, w, bias)

    def extra_repr(self) -> str:
        return super().extra_repr() + self.extra_quant_repr()


class QuantLinear(_QuantMixin, nn.Linear):
    """``nn.Linear`` with optional ``kernel_quantizer`` and ``input_quantizer``."""

    def __init__(
        self,
        *args,
        kernel_quantizer: WeightQuantizer | None = None,
        input_quantizer: InputQuantizer | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._init_quantizers(kernel_quantizer, input_quantizer)

    def _op(self, x: Tensor, w: Tensor, bias: Tensor | None) -> Tensor:
        return F.linear(x, w, bias)

    def _channel_view(self, t: Tensor, out: Tensor) -> Tensor:
        return t  # linear outputs keep features in the last dimension

    def extra_repr(self) -> str:
        return super().extra_repr() + self.extra_quant_repr()


def _abc_quantizers(**abc: object) -> tuple[ABCWeight, ABCInput | None]:
    """The registry's "abc" recipe (one place builds ABC quantizers), validated there."""
    return QuantConfig(name="abc", **abc).make()  # type: ignore[arg-type, return-value]


class ABCConv2d(QuantConv2d):
    """ABC-Net convolution: M weight bases, N activation bases (N = 0: float activations).

    Takes ``nn.Conv2d``'s arguments plus the ABC ones, so it drops in for a Conv2d.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device=None,
        dtype=None,
        *,
        M: int = 3,
        N: int = 3,
        shifts: Sequence[float] | None = None,
        alpha_scope: str = "layer",
        trainable_shifts: bool = False,
        act_shift_center: float = 0.5,
        act_shift_spread: float = 1.0,
        beta_init: float | str | None = None,
    ) -> None:
        kernel, inp = _abc_quantizers(
            M=M,
            N=N,
            shifts=shifts,
            alpha_scope=alpha_scope,
            trainable_shifts=trainable_shifts,
            act_shift_center=act_shift_center,
            act_shift_spread=act_shift_spread,
            beta_init=beta_init,
        )
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype, kernel_quantizer=kernel, input_quantizer=inp,
        )  # fmt: skip


class ABCLinear(QuantLinear):
    """ABC-Net linear layer: M weight bases, N activation bases (N = 0: float activations)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device=None,
        dtype=None,
        *,
        M: int = 3,
        N: int = 3,
        shifts: Sequence[float] | None = None,
        alpha_scope: str = "layer",
        trainable_shifts: bool = False,
        act_shift_center: float = 0.5,
        act_shift_spread: float = 1.0,
        beta_init: float | str | None = None,
    ) -> None:
        kernel, inp = _abc_quantizers(
            M=M,
            N=N,
            shifts=shifts,
            alpha_scope=alpha_scope,
            trainable_shifts=trainable_shifts,
            act_shift_center=act_shift_center,
            act_shift_spread=act_shift_spread,
            beta_init=beta_init,
        )
        super().__init__(
            in_features,
            out_features,
            bias,
            device,
            dtype,
            kernel_quantizer=kernel,
            input_quantizer=inp,
        )


__all__ = ["QuantConv2d", "QuantLinear", "ABCConv2d", "ABCLinear"]
