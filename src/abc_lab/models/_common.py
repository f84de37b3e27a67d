"""Helpers shared by the model families."""

from __future__ import annotations

import torch
from torch import nn


def norm_into(norm: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(norm(x))`` for a normalisation whose output only ``layer`` reads. A layer
    that offers ``forward_from_norm`` (the quantized layers: BatchNorm and input
    binarisation in one pass) computes both itself."""
    fused = getattr(layer, "forward_from_norm", None)
    return fused(norm, x) if fused is not None else layer(norm(x))


class NormIntoSequential(nn.Sequential):
    """``nn.Sequential`` (same modules, same state-dict keys) that passes each BatchNorm and
    the module after it through ``norm_into``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        modules = list(self)
        i = 0
        while i < len(modules):
            if isinstance(modules[i], nn.modules.batchnorm._BatchNorm) and i + 1 < len(modules):
                x = norm_into(modules[i], modules[i + 1], x)
                i += 2
            else:
                x = modules[i](x)
                i += 1
        return x


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal init for convs (fan_out, ReLU); BatchNorm weight 1 and bias 0."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
