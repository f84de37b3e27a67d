"""ResNet-18/34/50 (ImageNet layout) with the block order used for binary networks.

Order of every conv after the stem (XNOR-Net, followed by ABC-Net):
BatchNorm -> (binarise activations, done later inside the conv) -> conv -> ReLU.
The BatchNorm right before a conv gives the binariser a zero-centred input with both signs;
after a ReLU all values are >= 0 and sign() would give almost only +1. The stem conv sees raw
pixels and stays full precision, so it keeps the usual conv -> BN -> ReLU. The shortcut conv
(``downsample``: 1x1 conv + BN) sees the post-ReLU block input; converters usually keep it full
precision.

Inputs of at most 64 pixels get a small-input stem (3x3 conv, stride 1, no max-pool); larger
inputs the ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from abc_lab.models._common import init_weights, norm_into
from abc_lab.models._registry import register_model

SMALL_INPUT_MAX = 64
"""Largest input size (pixels) that gets the small-input stem."""

Stem = Literal["imagenet", "small"]


def _downsample(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """1x1 conv (stride) + BN shortcut when the shape changes, else None (identity)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(
        nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False),
        nn.BatchNorm2d(out_planes),
    )


class BasicBlock(nn.Module):
    """Two 3x3 convs: ``relu(conv2(bn2(relu(conv1(bn1(x))))) + shortcut(x))``."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(norm_into(self.bn1, self.conv1, x))
        h = norm_into(self.bn2, self.conv2, h)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(h + shortcut)


class Bottleneck(nn.Module):
    """1x1 -> 3x3 (stride) -> 1x1 convs, each preceded by BN, output ``planes * 4`` channels."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * self.expansion, 1, bias=False)
        self.relu = nn.ReLU()
        self.downsample = _downsample(in_planes, planes * self.expansion, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.relu(norm_into(self.bn1, self.conv1, x))
        h = self.relu(norm_into(self.bn2, self.conv2, h))
        h = norm_into(self.bn3, self.conv3, h)
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(h + shortcut)


class BiRealBlock(BasicBlock):
    """BasicBlock with a shortcut around each conv (Bi-Real Net, Liu et al. 2018):
    ``h = relu(conv1(bn1(x)) + shortcut(x))``, ``relu(conv2(bn2(h)) + h)``.

    The same modules and parameters as :class:`BasicBlock`; only the wiring differs. In a
    binary network each binarised conv then adds to the real-valued activations before it
    instead of replacing them, so the information its one-bit input drops is carried past it.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        h = self.relu(norm_into(self.bn1, self.conv1, x) + shortcut)
        return self.relu(norm_into(self.bn2, self.conv2, h) + h)


Block = type[BasicBlock] | type[Bottleneck]


class ResNet(nn.Module):
    """Stem, one stage per entry of ``layers`` (first stride 1, then 2), global pool, ``fc``.

    ``stem="imagenet"``: 7x7 stride-2 conv + 3x3 stride-2 max-pool; ``stem="small"``: 3x3
    stride-1 conv, no max-pool. The stem width is ``widths[0]``.
    """

    def __init__(
        self,
        block: Block,
        layers: Sequence[int],
        widths: Sequence[int] = (64, 128, 256, 512),
        num_classes: int = 1000,
        in_channels: int = 3,
        stem: Stem = "imagenet",
    ) -> None:
        super().__init__()
        if len(layers) != len(widths):
            raise ValueError(f"layers {list(layers)} and widths {list(widths)} differ in length.")
        stem_width = widths[0]
        if stem == "imagenet":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 7, stride=2, padding=3, bias=False)
            self.maxpool: nn.Module = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        elif stem == "small":
            self.conv1 = nn.Conv2d(in_channels, stem_width, 3, stride=1, padding=1, bias=False)
            self.maxpool = nn.Identity()
        else:
            raise ValueError(f"stem must be 'imagenet' or 'small', got {stem!r}.")
        self.bn1 = nn.BatchNorm2d(stem_width)
        self.relu = nn.ReLU()

        in_planes = stem_width
        for i, (num_blocks, planes) in enumerate(zip(layers, widths, strict=True)):
            stride = 1 if i == 0 else 2
            blocks = []
            for j in range(num_blocks):
                blocks.append(block(in_planes, planes, stride if j == 0 else 1))
                in_planes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.num_stages = len(layers)

        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(in_planes, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _stem_for(input_size: int) -> Stem:
    return "small" if input_size <= SMALL_INPUT_MAX else "imagenet"


@register_model("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """ResNet-18: BasicBlock, stages [2, 2, 2, 2]."""
    return ResNet(
        BasicBlock,
        [2, 2, 2, 2],
        num_classes=num_classes,
        in_channels=in_channels,
        stem=_stem_for(input_size),
    )


@register_model("resnet34")
def resnet34(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """ResNet-34: BasicBlock, stages [3, 4, 6, 3]."""
    return ResNet(
        BasicBlock,
        [3, 4, 6, 3],
        num_classes=num_classes,
        in_channels=in_channels,
        stem=_stem_for(input_size),
    )


@register_model("resnet50")
def resnet50(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """ResNet-50: Bottleneck, stages [3, 4, 6, 3]."""
    return ResNet(
        Bottleneck,
        [3, 4, 6, 3],
        num_classes=num_classes,
        in_channels=in_channels,
        stem=_stem_for(input_size),
    )


@register_model("resnet18_bireal")
def resnet18_bireal(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """Bi-Real-18: ResNet-18 with a shortcut around each conv (BiRealBlock)."""
    return ResNet(
        BiRealBlock,
        [2, 2, 2, 2],
        num_classes=num_classes,
        in_channels=in_channels,
        stem=_stem_for(input_size),
    )
