"""Model summary in the spirit of Larq's: bits, memory and MACs by precision, per layer.

A MAC of a layer whose weights AND inputs are binary is a binary MAC; in an ABC layer it
costs M·N binary operations (XNOR + popcount). Everything else (full-precision layers,
binary weights with float inputs) counts as float MACs. Memory is reported as float32
versus packed: bits per weight plus the float scales (α) each quantizer keeps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from .layers import QuantConv2d, QuantLinear

FLOAT_BITS = 32


@dataclass
class LayerSummary:
    name: str
    kind: str
    params: int
    weight_bits: int
    input_bits: int
    float_bytes: int
    packed_bytes: int
    macs: int
    binary_ops: int

    @property
    def binary(self) -> bool:
        return self.weight_bits < FLOAT_BITS and self.input_bits < FLOAT_BITS


@dataclass
class ModelSummary:
    layers: list[LayerSummary] = field(default_factory=list)
    other_params: int = 0  # BatchNorm and other float parameters outside conv/linear

    @property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers) + self.other_params

    @property
    def float_bytes(self) -> int:
        return sum(layer.float_bytes for layer in self.layers) + 4 * self.other_params

    @property
    def packed_bytes(self) -> int:
        return sum(layer.packed_bytes for layer in self.layers) + 4 * self.other_params

    @property
    def binary_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if layer.binary)

    @property
    def float_macs(self) -> int:
        return sum(layer.macs for layer in self.layers if not layer.binary)

    @property
    def binary_ops(self) -> int:
        return sum(layer.binary_ops for layer in self.layers)

    def totals(self) -> dict:
        """Whole-model figures, as stored in run records."""
        macs = self.binary_macs + self.float_macs
        binarized_params = sum(
            layer.params for layer in self.layers if layer.weight_bits < FLOAT_BITS
        )
        return {
            "params": self.params,
            "binarized_params": binarized_params,
            "memory_float_bytes": self.float_bytes,
            "memory_packed_bytes": self.packed_bytes,
            "compression": self.float_bytes / max(self.packed_bytes, 1),
            "macs": macs,
            "binary_macs": self.binary_macs,
            "float_macs": self.float_macs,
            "binary_ops": self.binary_ops,
            "binarized_mac_ratio": self.binary_macs / max(macs, 1),
        }

    def to_dict(self) -> dict:
        return {"totals": self.totals(), "layers": [asdict(layer) for layer in self.layers]}

    def rich_table(self, title: str = "Model summary"):
        from rich.table import Table

        table = Table(title=title, show_footer=True)
        totals = self.totals()
        cols = [
            ("layer", "total", "left"),
            ("kind", "", "left"),
            ("params", f"{totals['params']:,}", "right"),
            ("bits w/x", "", "right"),
            ("float KiB", f"{totals['memory_float_bytes'] / 1024:,.1f}", "right"),
            ("packed KiB", f"{totals['memory_packed_bytes'] / 1024:,.1f}", "right"),
            ("binary MACs", _count(totals["binary_macs"]), "right"),
            ("float MACs", _count(totals["float_macs"]), "right"),
        ]
        for header, footer, justify in cols:  # layer names are never cut; numbers may fold
            table.add_column(
                header,
                footer=footer,
                justify=justify,
                no_wrap=header in ("layer", "kind"),
                overflow="fold",
                min_width=len(footer) or None,
            )
        for layer in self.layers:
            table.add_row(
                layer.name,
                layer.kind.replace("Quant", "Q"),
                f"{layer.params:,}",
                f"{layer.weight_bits}/{layer.input_bits}",
                f"{layer.float_bytes / 1024:,.1f}",
                f"{layer.packed_bytes / 1024:,.1f}",
                _count(layer.macs) if layer.binary else "0",
                "0" if layer.binary else _count(layer.macs),
            )
        table.caption = (
            f"compression {totals['compression']:.1f}x, "
            f"binarized MACs {100 * totals['binarized_mac_ratio']:.1f}%, "
            f"binary ops {_count(totals['binary_ops'])}"
        )
        return table


def _count(n: int) -> str:
    """Compact count for tables: 1.81 M, 640 k, 72."""
    if n >= 1_000_000:
        return f"{n / 1e6:.2f} M"
    if n >= 10_000:
        return f"{n / 1e3:.0f} k"
    return f"{n:,}"


def _layer_summary(name: str, layer: nn.Module, out: torch.Tensor) -> LayerSummary:
    weight = layer.weight
    kernel = getattr(layer, "kernel_quantizer", None)
    inp = getattr(layer, "input_quantizer", None)
    w_bits = FLOAT_BITS if kernel is None else kernel.bits
    x_bits = FLOAT_BITS if inp is None else inp.bits
    n_bias = 0 if layer.bias is None else layer.bias.numel()
    n_weight = weight.numel()
    extra = sum(p.numel() for p in layer.parameters(recurse=True)) - n_weight - n_bias
    scales = 0 if kernel is None else kernel.scale_count(weight)
    if w_bits < FLOAT_BITS:
        packed_bits = n_weight * w_bits + FLOAT_BITS * (scales + n_bias + extra)
    else:
        packed_bits = FLOAT_BITS * (n_weight + n_bias + extra)
    if isinstance(layer, nn.Conv2d):
        per_output = weight.shape[1] * weight.shape[2] * weight.shape[3]
        macs = (out[0].numel()) * per_output
    else:
        macs = (out[0].numel()) * weight.shape[1]
    binary = w_bits < FLOAT_BITS and x_bits < FLOAT_BITS
    return LayerSummary(
        name=name,
        kind=type(layer).__name__,
        params=n_weight + n_bias + extra,
        weight_bits=w_bits,
        input_bits=x_bits,
        float_bytes=4 * (n_weight + n_bias + extra),
        packed_bytes=(packed_bits + 7) // 8,
        macs=int(macs),
        binary_ops=int(macs * w_bits * x_bits) if binary else 0,
    )


def summarize(model: nn.Module, input_shape: tuple[int, ...]) -> ModelSummary:
    """Summarise ``model`` for one input of shape ``input_shape`` = (C, H, W) or (features,)."""
    layers = [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, nn.Conv2d | nn.Linear | QuantConv2d | QuantLinear)
    ]
    outputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: outputs.__setitem__(n, o.detach()))
        for n, m in layers
    ]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        model.eval()
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    summary = ModelSummary()
    counted: set[int] = set()
    for n, m in layers:
        if n in outputs:
            summary.layers.append(_layer_summary(n, m, outputs[n]))
            counted.update(id(p) for p in m.parameters())
    summary.other_params = sum(p.numel() for p in model.parameters() if id(p) not in counted)
    return summary
