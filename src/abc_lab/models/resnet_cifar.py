"""ResNet-20 in the CIFAR layout (He et al. 2016, section 4.2) with the binary-net block order.

3x3 stem conv (16 channels, stride 1) -> BN -> ReLU, then 3 stages of 3 BasicBlocks with 16, 32,
64 channels (strides 1, 2, 2), global average pool and ``fc``. The blocks are the ones of
:mod:`abc_lab.models.resnet` (BN -> conv -> ReLU, so each binarised conv sees a zero-centred
input); shape-changing shortcuts are 1x1 conv + BN (option B). ``resnet20_bireal`` has the same
modules wired with a shortcut around each conv (``BiRealBlock``).
"""

from __future__ import annotations

from abc_lab.models._registry import register_model
from abc_lab.models.resnet import BasicBlock, BiRealBlock, ResNet


@register_model("resnet20")
def resnet20(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """ResNet-20 (about 0.27 M parameters); ``input_size`` is accepted for a uniform signature."""
    del input_size  # one layout for every input size; the global pool absorbs the size
    return _resnet20(BasicBlock, num_classes, in_channels)


@register_model("resnet20_bireal")
def resnet20_bireal(num_classes: int = 10, in_channels: int = 3, input_size: int = 32) -> ResNet:
    """ResNet-20 with a shortcut around each conv (BiRealBlock): the same parameters."""
    del input_size
    return _resnet20(BiRealBlock, num_classes, in_channels)


def _resnet20(block: type[BasicBlock], num_classes: int, in_channels: int) -> ResNet:
    return ResNet(
        block,
        [3, 3, 3],
        widths=(16, 32, 64),
        num_classes=num_classes,
        in_channels=in_channels,
        stem="small",
    )
