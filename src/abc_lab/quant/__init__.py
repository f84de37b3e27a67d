"""ABC-Net quantization, independent of any training framework.

Functional ops (bases, straight-through estimators), quantizer modules, drop-in layers,
the quantizer registry (fp, bnn, bwn, xnor, abc), model conversion and model summary.
"""

from .convert import as_quant_config, quantizable_layers, quantize_model, set_reference_mode
from .functional import (
    abc_activation,
    activation_bases,
    activation_shifts,
    fold_layers,
    fold_weight_bases,
    sign_ste,
    sign_window_ste,
    weight_bases,
    weight_reconstruction_error,
    weight_shifts,
)
from .layers import ABCConv2d, ABCLinear, QuantConv2d, QuantLinear
from .model_summary import ModelSummary, summarize
from .quantizers import (
    ABCInput,
    ABCWeight,
    InputQuantizer,
    ScaledSignWeight,
    SignInput,
    SignWeight,
    WeightQuantizer,
)
from .registry import QuantConfig, list_quantizers, parse_quant_spec, register_quantizer

__all__ = [
    "ABCConv2d",
    "ABCInput",
    "ABCLinear",
    "ABCWeight",
    "InputQuantizer",
    "ModelSummary",
    "QuantConfig",
    "QuantConv2d",
    "QuantLinear",
    "ScaledSignWeight",
    "SignInput",
    "SignWeight",
    "WeightQuantizer",
    "abc_activation",
    "activation_bases",
    "activation_shifts",
    "as_quant_config",
    "fold_layers",
    "fold_weight_bases",
    "list_quantizers",
    "parse_quant_spec",
    "quantizable_layers",
    "quantize_model",
    "register_quantizer",
    "set_reference_mode",
    "sign_ste",
    "sign_window_ste",
    "summarize",
    "weight_bases",
    "weight_reconstruction_error",
    "weight_shifts",
]
