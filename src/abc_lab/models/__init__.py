"""Model zoo: ResNet-18/34/50, CIFAR ResNet-20 and VGG-Small, built by name.

Every model uses plain ``nn.Conv2d`` / ``nn.Linear`` (the quantizer swaps them later), the
stem conv is the first ``Conv2d`` registered and the classifier ``fc`` the last ``Linear``,
so "keep the first and last layer full precision" can find them by registration order.

    >>> from abc_lab.models import build_model, list_models
    >>> model = build_model("resnet20", num_classes=10, in_channels=1, input_size=28)
"""

from abc_lab.models import resnet, resnet_cifar, vgg  # noqa: F401  (registers the builders)
from abc_lab.models._registry import build_model, list_models, register_model

# The config fields ``build_model`` takes: what a run's ``model`` section must give to rebuild it.
BUILD_KEYS = ("name", "num_classes", "in_channels", "input_size")

__all__ = ["BUILD_KEYS", "build_model", "list_models", "register_model"]
