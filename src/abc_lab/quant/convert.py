"""Model conversion: swap a model's Conv2d / Linear layers for quantized ones (Brevitas style)."""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from .layers import QuantConv2d, QuantLinear, fold_model_weights, release_model_weights
from .registry import QuantConfig


def as_quant_config(config: QuantConfig | Mapping | str) -> QuantConfig:
    """Accept a QuantConfig, a mapping of its fields, or a bare quantizer name."""
    if isinstance(config, QuantConfig):
        return config
    if isinstance(config, str):
        return QuantConfig(name=config)
    fields = {k: v for k, v in dict(config).items() if not str(k).startswith("_")}
    return QuantConfig(**fields)


def quantizable_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and Linear layers in registration order (first = stem, last = classifier)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def _quantized_copy(layer: nn.Module, cfg: QuantConfig) -> nn.Module:
    kernel, inp = cfg.make()
    common = dict(kernel_quantizer=kernel, input_quantizer=inp, bias=layer.bias is not None)
    dev = dict(device=layer.weight.device, dtype=layer.weight.dtype)
    if isinstance(layer, nn.Conv2d):
        new = QuantConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
            layer.dilation, layer.groups, padding_mode=layer.padding_mode, **common, **dev,
        )  # fmt: skip
    else:
        new = QuantLinear(layer.in_features, layer.out_features, **common, **dev)
    new.weight.data.copy_(layer.weight.data)
    if layer.bias is not None:
        new.bias.data.copy_(layer.bias.data)
    for q in (kernel, inp):
        if q is not None:
            q.to(layer.weight.device)
    new.train(layer.training)
    return new


def quantize_model(model: nn.Module, config: QuantConfig | Mapping | str) -> nn.Module:
    """Replace Conv2d / Linear layers by quantized versions, in place, and return the model.

    The first Conv2d/Linear (the stem, which sees raw pixels) and the last one (the
    classifier) stay full precision unless ``keep_first`` / ``keep_last`` are false; names
    matching ``keep_fp`` patterns stay full precision too. Weights are copied, so a trained
    full-precision model converts directly (the usual initialisation for binary nets).
    The model quantizes all its layers' weights together once per forward pass
    (``fold_model_weights``).
    """
    cfg = as_quant_config(config)
    layers = quantizable_layers(model)
    if cfg.make() == (None, None) or not layers:  # nothing to quantize (fp)
        return model
    first, last = layers[0][0], layers[-1][0]
    for name, layer in layers:
        if isinstance(layer, QuantConv2d | QuantLinear):
            raise ValueError(f"layer {name!r} is already quantized; convert a float model")
        if (cfg.keep_first and name == first) or (cfg.keep_last and name == last):
            continue
        if cfg.is_kept_fp(name):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, _quantized_copy(layer, cfg))
    model.register_forward_pre_hook(fold_model_weights)
    model.register_forward_hook(release_model_weights)
    return model


def set_reference_mode(model: nn.Module, enabled: bool = True) -> int:
    """Make every quantized layer run its M·N reference path; returns how many layers changed."""
    layers = [m for m in model.modules() if isinstance(m, QuantConv2d | QuantLinear)]
    for m in layers:
        m.reference = enabled
    return len(layers)
