"""Registry of model builders (timm style): a name maps to a function that builds the model.

The registry dict is the only module-level state; builders are plain functions that take
``num_classes``, ``in_channels`` and ``input_size`` as keyword arguments.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from torch import nn


class ModelBuilder(Protocol):
    """Signature every registered builder has."""

    def __call__(self, *, num_classes: int, in_channels: int, input_size: int) -> nn.Module: ...


_MODELS: dict[str, ModelBuilder] = {}


def register_model(name: str) -> Callable[[ModelBuilder], ModelBuilder]:
    """Decorator that registers a model builder under ``name`` (names must be unique)."""

    def decorator(fn: ModelBuilder) -> ModelBuilder:
        if name in _MODELS:
            raise ValueError(f"Model name {name!r} is already registered; pick another name.")
        _MODELS[name] = fn
        return fn

    return decorator


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_MODELS)


def _check_int(arg: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{arg} must be an integer >= {minimum}, got {value!r}.")


def build_model(
    name: str, num_classes: int = 10, in_channels: int = 3, input_size: int = 32
) -> nn.Module:
    """Build the registered model ``name`` for ``in_channels`` x ``input_size``² inputs.

    ``input_size`` picks the stem where a family has two (ResNet: small-input stem at <= 64).
    Raises ``ValueError`` with one sentence for an unknown name or an out-of-range argument.
    """
    if name not in _MODELS:
        raise ValueError(
            f"Unknown model {name!r}; available models are: {', '.join(list_models())}."
        )
    _check_int("num_classes", num_classes, 1)
    _check_int("in_channels", in_channels, 1)
    _check_int("input_size", input_size, 8)
    return _MODELS[name](num_classes=num_classes, in_channels=in_channels, input_size=input_size)
