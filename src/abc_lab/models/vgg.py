"""VGG-Small, the CIFAR network of the binary-net papers (BNN, XNOR-Net, LQ-Nets, ...).

Convs: 128, 128, M, 256, 256, M, 512, 512, M (3x3, 'M' = 2x2 max-pool), then global average
pooling and a linear classifier ``fc`` (the pool makes any input size >= 8 work).

Order: the stem conv sees raw pixels and stays full precision: conv -> BN -> ReLU. Every later
conv: BN -> (binarise activations, done later inside the conv) -> conv -> (MaxPool) -> ReLU.
The BN right before the conv gives the binariser a zero-centred input with both signs; the pool
comes after the conv because max-pooling binary values gives mostly +1.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from abc_lab.models._common import NormIntoSequential, init_weights
from abc_lab.models._registry import register_model

VGG_SMALL_CFG: tuple[int | str, ...] = (128, 128, "M", 256, 256, "M", 512, 512, "M")


class VGG(nn.Module):
    """VGG from a config of conv widths and 'M' (max-pool after the preceding conv)."""

    def __init__(
        self, cfg: Sequence[int | str], num_classes: int = 10, in_channels: int = 3
    ) -> None:
        super().__init__()
        if not cfg or not isinstance(cfg[0], int):
            raise ValueError(f"cfg must start with a conv width, got {list(cfg)!r}.")
        layers: list[nn.Module] = []
        channels = in_channels
        for i, item in enumerate(cfg):
            if item == "M":
                continue
            if not isinstance(item, int):
                raise ValueError(f"cfg entries must be ints or 'M', got {item!r}.")
            pool = i + 1 < len(cfg) and cfg[i + 1] == "M"
            conv = nn.Conv2d(channels, item, 3, padding=1, bias=False)
            if i == 0:  # stem: full precision, raw pixels in
                layers += [conv, nn.BatchNorm2d(item), nn.ReLU()]
                if pool:
                    layers.append(nn.MaxPool2d(2))
            else:
                layers += [nn.BatchNorm2d(channels), conv]
                if pool:
                    layers.append(nn.MaxPool2d(2))
                layers.append(nn.ReLU())
            channels = item
        self.features = NormIntoSequential(*layers)  # BN -> binarised conv fused in training
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


@register_model("vgg_small")
def vgg_small(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> VGG:
    """VGG-Small; ``input_size`` is accepted for a uniform signature (global pool absorbs it)."""
    del input_size
    return VGG(VGG_SMALL_CFG, num_classes=num_classes, in_channels=in_channels)
