"""The runtime model: a packed file loaded into the float architecture with bitwise layers.

The architecture comes from :mod:`abc_lab.models` (the definitions the file must match);
every quantized layer is replaced by a :class:`PackedConv2d` / :class:`PackedLinear` built
from the file, and float layers (stem, BatchNorm, shortcuts, classifier) run through torch.

Backends: ``native`` runs binary convolutions as XNOR + popcount over packed bits (the
compiled kernels); ``simulated`` runs them as the M·N float convolutions on ±1 values of the
reference arithmetic, as training's test evaluation computes them. Both give the same float32
values to the last bit: the dot products are exact integers either way, and the kernels
combine them with α and β in the reference's order. ``auto`` is native where the kernels
build.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import build_model
from ..quant.functional import sign_pm1
from . import kernels
from .format import FormatError, load_packed
from .packing import LANES, kernel_weights, signs, unpack_bits

BACKENDS = ("auto", "native", "simulated")


class _PackedLayer(nn.Module):
    """Shared state of a quantized layer read from the file: bases, α, thresholds, β."""

    def __init__(self, name: str, entry: dict[str, Any], tensors: dict[str, Tensor]) -> None:
        super().__init__()
        self.name, self.entry = name, entry
        shape, M = entry["shape"], entry["M"]
        count = M * int(torch.tensor(shape).prod())
        bits = tensors.get(f"{name}.weight_bits")
        if bits is None or bits.numel() * 8 < count:
            raise FormatError(f"packed layer {name!r} lacks its {count} weight bits")
        negative = unpack_bits(bits, count).view(M, *shape)
        self.register_buffer("negative", negative, persistent=False)
        self.register_buffer("bases", signs(negative), persistent=False)
        alpha = tensors.get(f"{name}.alpha")
        if alpha is None:
            alpha = torch.ones(1)
        self.register_buffer("alpha", alpha.float().view(entry["alpha_shape"]), persistent=False)
        bias = tensors.get(f"{name}.bias")
        self.register_buffer("bias", None if bias is None else bias.float(), persistent=False)
        self.input_kind = entry["input"]
        if self.input_kind == "abc":
            v = tensors[f"{name}.input_quantizer.v"].float()
            beta = tensors[f"{name}.input_quantizer.beta"].float()
            thresholds = 0.5 - v  # the float32 edges training compares with (x >= 0.5 - v)
        else:
            beta = torch.ones(1)
            thresholds = torch.zeros(1)
        self.register_buffer("beta", beta, persistent=False)
        self.register_buffer("thresholds", thresholds, persistent=False)

    def op(self, a: Tensor, b: Tensor) -> Tensor:
        raise NotImplementedError

    def reference(self, x: Tensor) -> Tensor:
        """Σ_m Σ_n α_m (β_n op(A_n, B_m)) + bias, the float operations on ±1 values (exact
        integer dot products) in the order of the training layers' reference arithmetic
        (``forward_reference``, which test evaluation uses): the same float32 result."""
        A = self.input_bases(x)
        out = None
        for m in range(self.bases.shape[0]):
            a = self.alpha[m] if self.alpha.numel() > 1 else self.alpha.reshape(())
            for n in range(len(A)):
                term = self.op(A[n], self.bases[m])
                if self.input_kind == "abc":
                    term = self.beta[n] * term
                term = (a if a.dim() == 0 else a.reshape(1, -1, *[1] * (term.dim() - 2))) * term
                out = term if out is None else out + term
        if self.bias is not None:
            out = out + self.bias.view(1, -1, *[1] * (out.dim() - 2))
        return out

    def input_bases(self, x: Tensor) -> list[Tensor]:
        """The layer's input as its bases: [A_1 … A_N] (±1), [sign(x)] or [x] (float input)."""
        if self.input_kind is None:
            return [x]
        if self.input_kind == "sign":
            return [sign_pm1(x)]
        one = torch.ones((), dtype=x.dtype)
        return [torch.where(x >= t, one, -one) for t in self.thresholds]


class PackedConv2d(_PackedLayer):
    """A quantized convolution: bitwise kernels (native) or the reference arithmetic in float."""

    def __init__(
        self, name: str, entry: dict[str, Any], tensors: dict[str, Tensor], backend: str
    ) -> None:
        super().__init__(name, entry, tensors)
        self.stride = tuple(entry["stride"])
        self.padding = tuple(entry["padding"])
        self.dilation = tuple(entry["dilation"])
        self.groups = entry["groups"]
        self.backend = backend
        kernel_ok = (
            self.input_kind is not None
            and len(set(self.stride)) == 1
            and len(set(self.padding)) == 1
            and self.dilation == (1, 1)
            and self.groups == 1
            and entry.get("padding_mode", "zeros") == "zeros"
        )
        self.native = backend == "native" and kernel_ok
        if self.native:
            w, wpc = kernel_weights(self.negative)
            self.register_buffer("kw", w, persistent=False)
            self.register_buffer("kpc", wpc, persistent=False)
            self.register_buffer("kalpha", self._alphas(w.shape[1] * LANES), persistent=False)

    def _alphas(self, padded_out: int) -> Tensor:
        """alpha[m][o] = α_m(o), zero for padding channels."""
        M, Co = self.entry["M"], self.entry["shape"][0]
        alpha = self.alpha.reshape(M if self.alpha.numel() > 1 else 1, -1).expand(M, Co)
        out = torch.zeros(M, padded_out)
        out[:, :Co] = alpha
        return out.contiguous()

    def forward(self, x: Tensor) -> Tensor:
        if self.native:
            Co, Ci, KH, KW = self.entry["shape"]
            mod = kernels.native(quiet=True)
            return mod.binary_conv2d(
                x.float(), self.thresholds, self.kw, self.kpc, self.kalpha, self.beta, self.bias,
                Ci, Co, KH, KW, self.stride[0], self.padding[0], kernels.isa(), False,
            )[0]  # fmt: skip
        return self.reference(x)

    def op(self, a: Tensor, b: Tensor) -> Tensor:
        return F.conv2d(a, b, None, self.stride, self.padding, self.dilation, self.groups)

    def dots(self, x: Tensor) -> Tensor:
        """Integer dot products of every (B_m, A_n) pair, (M, N, B, OH, OW, C_out), by the
        kernels (native) or by float convolutions on ±1 values (exact for K < 2^24)."""
        Co, Ci, KH, KW = self.entry["shape"]
        if self.native:
            mod = kernels.native(quiet=True)
            return mod.binary_conv2d(
                x.float(), self.thresholds, self.kw, self.kpc, self.kalpha, self.beta, None,
                Ci, Co, KH, KW, self.stride[0], self.padding[0], kernels.isa(), True,
            )[1]  # fmt: skip
        A = self.input_bases(x)
        out = [self.op(a, b) for b in self.bases for a in A]
        dots = torch.stack(out).round().to(torch.int64)
        M, N = self.bases.shape[0], len(A)
        return dots.view(M, N, *dots.shape[1:]).permute(0, 1, 2, 4, 5, 3).contiguous()


class PackedLinear(_PackedLayer):
    """A quantized linear layer (the reference arithmetic; classifiers usually stay float)."""

    def __init__(
        self, name: str, entry: dict[str, Any], tensors: dict[str, Tensor], backend: str
    ) -> None:
        super().__init__(name, entry, tensors)
        self.native = False

    def op(self, a: Tensor, b: Tensor) -> Tensor:
        return F.linear(a, b)

    def forward(self, x: Tensor) -> Tensor:
        return self.reference(x)


class EngineModel(nn.Module):
    """A packed model ready to run: ``model(x)`` gives logits; ``meta`` is the file's metadata."""

    def __init__(self, net: nn.Module, meta: dict[str, Any], backend: str) -> None:
        super().__init__()
        self.net, self.meta, self.backend = net, meta, backend

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        return self.net(x.float())

    def packed_layers(self) -> list[tuple[str, _PackedLayer]]:
        return [(n, m) for n, m in self.net.named_modules() if isinstance(m, _PackedLayer)]


def resolve_backend(backend: str) -> str:
    """``native`` or ``simulated`` for a requested backend (``auto``: native if it builds)."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "simulated":
        return backend
    if kernels.native(quiet=backend == "native") is None:
        if backend == "native":
            raise RuntimeError(f"bitwise kernels unavailable: {kernels.native_error()}")
        return "simulated"
    return "native"


def build_engine(
    tensors: dict[str, Tensor], meta: dict[str, Any], backend: str = "auto", where: str = "file"
) -> EngineModel:
    """The runtime model for already-loaded file contents."""
    backend = resolve_backend(backend)
    try:
        net = build_model(**meta["model"])
    except (KeyError, TypeError, ValueError) as err:
        raise FormatError(f"model file '{where}' names no buildable model ({err})") from err
    for name, entry in meta.get("layers", {}).items():
        try:
            old = net.get_submodule(name)
        except AttributeError as err:
            raise FormatError(f"model file '{where}': layer {name!r} is not in the model") from err
        cls = PackedConv2d if entry["type"] == "conv2d" else PackedLinear
        if not isinstance(old, nn.Conv2d if cls is PackedConv2d else nn.Linear):
            raise FormatError(f"model file '{where}': layer {name!r} has another type")
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, cls(name, entry, tensors, backend))
    expected = {k for k in net.state_dict() if not k.endswith("num_batches_tracked")}
    floats = {k: v for k, v in tensors.items() if k in expected}
    missing = sorted(expected - set(floats))
    if missing:
        raise FormatError(f"model file '{where}' lacks tensor '{missing[0]}'")
    net.load_state_dict(floats, strict=False)
    if backend == "native":
        _float_layers_see_nchw(net)
    return EngineModel(net.eval(), meta, backend)


_LAYOUT_SENSITIVE = (nn.Conv2d, nn.Linear, nn.AdaptiveAvgPool2d, nn.AvgPool2d)
_MAX_POOLS = (nn.MaxPool2d, nn.AdaptiveMaxPool2d)


def _channels_last(args: tuple) -> tuple:
    x = args[0]
    return (x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x, *args[1:])


def _float_layers_see_nchw(net: nn.Module) -> None:
    """The kernels return channels-last tensors (NHWC data, no copy; the next binary layer
    packs from it directly, and element-wise layers keep the layout and their values). Float
    layers that sum over elements (convolutions, average pooling) may sum in another order on
    another layout, so each gets its input in the contiguous NCHW layout training gave it:
    one copy where the engine's layout meets such a layer, none on the binary path. Max
    pooling gives the same values in any order, and torch runs it many times faster on
    channels-last data (ResNet-18's stem pool, one thread: about 0.3 ms against 6.6 ms), so
    max pools get channels-last input."""
    for module in net.modules():
        if isinstance(module, _PackedLayer):
            continue
        if isinstance(module, _LAYOUT_SENSITIVE):
            module.register_forward_pre_hook(lambda _m, args: (args[0].contiguous(), *args[1:]))
        elif isinstance(module, _MAX_POOLS):
            module.register_forward_pre_hook(lambda _m, args: _channels_last(args))


def load_model(path: str | Path, backend: str = "auto") -> EngineModel:
    """Load a packed model file (``abc-lab export``) for inference on the CPU."""
    tensors, meta = load_packed(path)
    return build_engine(tensors, meta, backend, str(path))
