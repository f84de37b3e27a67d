"""Quantizer configurations by name: fp, bnn, bwn, xnor, abc, and the activation-only
abc_act_only and sign_act_only (Larq-style string aliases).

``QuantConfig`` is plain data (Hydra builds it from ``conf/quant/*.yaml``); the registry
maps its ``name`` to a recipe that makes fresh weight / input quantizers for each layer.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from . import functional as QF
from .calibrate import MODES as CALIBRATION_MODES
from .quantizers import (
    BNN_SCALES,
    ABCInput,
    ABCWeight,
    InputQuantizer,
    ScaledSignWeight,
    SignInput,
    SignWeight,
    WeightQuantizer,
)

Recipe = Callable[["QuantConfig"], tuple[WeightQuantizer | None, InputQuantizer | None]]
# The QuantConfig fields every quantizer that swaps layers reads: which layers stay float.
LAYER_FIELDS = ("keep_first", "keep_last", "keep_fp")


@dataclass(frozen=True)
class QuantizerSpec:
    """A registered quantizer: its recipe and what identifies its runs.

    fields: the QuantConfig fields it reads (given the config), which are part of its runs'
    key; label: the short label reports print; family: quantizers of one family are shown
    together (ABC's multi-base runs share heat maps over M and N)."""

    recipe: Recipe
    fields: Callable[[QuantConfig], tuple[str, ...]]
    label: Callable[[QuantConfig], str]
    family: str
    check: Callable[[QuantConfig], None] | None = None


_REGISTRY: dict[str, QuantizerSpec] = {}


def register_quantizer(
    name: str,
    fields: tuple[str, ...] | Callable[[QuantConfig], tuple[str, ...]] = LAYER_FIELDS,
    label: Callable[[QuantConfig], str] | None = None,
    family: str | None = None,
    check: Callable[[QuantConfig], None] | None = None,
) -> Callable[[Recipe], Recipe]:
    """Register a recipe ``cfg -> (kernel_quantizer, input_quantizer)`` under ``name``, with
    the config fields it reads, its label, its family (default: its own name) and an optional
    ``check`` that raises ValueError for settings it cannot use (run when a config is made)."""

    def deco(fn: Recipe) -> Recipe:
        _REGISTRY[name] = QuantizerSpec(
            recipe=fn,
            fields=fields if callable(fields) else (lambda cfg, f=tuple(fields): f),
            label=label or (lambda cfg: name),
            family=family or name,
            check=check,
        )
        return fn

    return deco


def list_quantizers() -> list[str]:
    return sorted(_REGISTRY)


@dataclass
class QuantConfig:
    """Which quantizer, with which bases, applied to which layers.

    name: fp | bnn | bwn | xnor | abc | abc_act_only | sign_act_only (the last two: binary
    activations, float weights).  M, N: ABC weight / activation base counts (N = 0: float
    activations, the paper's weight-only rows). shifts: weight shifts u (default
    evenly spread in [-1, 1]). alpha_scope: "layer" (paper) or "channel". act_shift_center /
    act_shift_spread: initial v (see ``activation_shifts``). act_calibration: null, or "beta" /
    "shifts" / "shifts_bn" to fit β (and the shifts) to each layer's inputs before training
    (``calibrate.py``). keep_first / keep_last: leave the
    first conv and the last linear layer in full precision. keep_fp: extra module-name
    patterns (fnmatch) to leave in full precision; by default the 1x1 shortcut convs
    ("*downsample*"), which see the non-negative block input and are kept float in
    common binary-ResNet practice. bnn_scale (bnn only): "none", sign weights with no scale
    as BNN was published, or "fan_in", sign(W)/√fan_in per layer (see ``SignWeight``).
    """

    name: str = "abc"
    M: int = 3
    N: int = 3
    shifts: list[float] | None = None
    alpha_scope: str = "layer"
    trainable_shifts: bool = False
    act_shift_center: float = 0.5
    act_shift_spread: float = 1.0
    beta_init: float | str | None = None  # None: 1/N; a number; "lsq": fit to N(0, 1)
    act_calibration: str | None = None  # None | beta | shifts | shifts_bn (calibrate.py)
    keep_first: bool = True
    keep_last: bool = True
    keep_fp: list[str] = field(default_factory=lambda: ["*downsample*"])
    bnn_scale: str = "none"  # bnn only: "none" (as published) or "fan_in" (sign(W)/√fan_in)

    def __post_init__(self) -> None:
        if self.name not in _REGISTRY:
            raise ValueError(
                f"unknown quantizer {self.name!r}; choose one of {', '.join(list_quantizers())}"
            )
        self.M = QF.check_count("M", self.M, 1)
        self.N = QF.check_count("N", self.N, 0)
        if self.alpha_scope not in QF.SCOPES:
            raise ValueError(f"alpha_scope must be one of {QF.SCOPES}, got {self.alpha_scope!r}")
        if self.shifts is not None:
            self.shifts = [float(u) for u in self.shifts]
            if len(self.shifts) != self.M:
                raise ValueError(f"shifts must hold exactly M={self.M} values, got {self.shifts}")
        if self.N > 1 and self.act_shift_spread <= 0:
            raise ValueError(
                f"act_shift_spread must be > 0 when N > 1 (else the N bases coincide), "
                f"got {self.act_shift_spread}"
            )
        if isinstance(self.beta_init, str) and self.beta_init != "lsq":
            raise ValueError(
                f"beta_init must be null (1/N), a number or 'lsq', got {self.beta_init!r}"
            )
        if self.act_calibration is not None and self.act_calibration not in CALIBRATION_MODES:
            raise ValueError(
                f"act_calibration must be null, {' or '.join(map(repr, CALIBRATION_MODES))}, "
                f"got {self.act_calibration!r}"
            )
        if self.bnn_scale not in BNN_SCALES:
            raise ValueError(f"bnn_scale must be one of {BNN_SCALES}, got {self.bnn_scale!r}")
        self.keep_fp = list(self.keep_fp)
        check = _REGISTRY[self.name].check
        if check is not None:
            check(self)

    def make(self) -> tuple[WeightQuantizer | None, InputQuantizer | None]:
        """Fresh (kernel_quantizer, input_quantizer) for one layer."""
        return _REGISTRY[self.name].recipe(self)

    def is_kept_fp(self, module_name: str) -> bool:
        return any(fnmatch.fnmatch(module_name, p) for p in self.keep_fp)

    def label(self) -> str:
        """Short human label: 'fp', 'xnor', 'abc(3,3)', 'abc(3,w)' for weight-only."""
        return _REGISTRY[self.name].label(self)

    def used_fields(self) -> tuple[str, ...]:
        """The fields of this config the quantizer reads (the others cannot change a run)."""
        return tuple(_REGISTRY[self.name].fields(self))

    def identity(self) -> dict:
        """What run records say of the quantizer: name, label, family, how many binary weight
        and activation bases each layer has (0: float), and the config fields it reads."""
        kernel, inputs = self.make()
        return {
            "name": self.name,
            "label": self.label(),
            "family": _REGISTRY[self.name].family,
            "weight_bases": 0 if kernel is None else int(getattr(kernel, "bits", 1)),
            "activation_bases": 0 if inputs is None else int(getattr(inputs, "bits", 1)),
            "fields": list(self.used_fields()),
        }

    def to_dict(self) -> dict:
        return asdict(self)


def parse_quant_spec(spec: str) -> QuantConfig:
    """A quantizer in the short form command-line tools take: ``fp``, ``bnn``, ``bnn:fan_in``
    (``bnn_scale``), ``bwn``, ``xnor`` or ``abc:M:N`` (N=0: float activations); ValueError
    names what is wrong."""
    name, *rest = spec.split(":")
    if name == "abc":
        if len(rest) != 2:
            raise ValueError(f"write abc:M:N, e.g. abc:3:3, not {spec!r}")
        return QuantConfig(name="abc", M=int(rest[0]), N=int(rest[1]))
    if name == "bnn" and len(rest) == 1:
        return QuantConfig(name="bnn", bnn_scale=rest[0])
    if rest:
        raise ValueError(f"{name} takes no base counts: {spec!r}")
    return QuantConfig(name=name)


@register_quantizer("fp", fields=())
def _fp(cfg: QuantConfig):
    return None, None


@register_quantizer(
    "bnn",
    fields=(*LAYER_FIELDS, "bnn_scale"),
    label=lambda cfg: "bnn" if cfg.bnn_scale == "none" else f"bnn({cfg.bnn_scale})",
)
def _bnn(cfg: QuantConfig):
    return SignWeight(cfg.bnn_scale), SignInput()


@register_quantizer("bwn")
def _bwn(cfg: QuantConfig):
    return ScaledSignWeight(), None


@register_quantizer("xnor")
def _xnor(cfg: QuantConfig):
    return ScaledSignWeight(), SignInput()


_ACT_FIELDS = ("act_shift_center", "act_shift_spread", "beta_init", "act_calibration")


def _abc_fields(cfg: QuantConfig) -> tuple[str, ...]:
    weights = ("M", "shifts", "alpha_scope", "trainable_shifts")
    acts = ("N", *_ACT_FIELDS) if cfg.N else ("N",)
    return (*LAYER_FIELDS, *weights, *acts)


@register_quantizer(
    "abc",
    fields=_abc_fields,
    label=lambda cfg: f"abc({cfg.M},{cfg.N if cfg.N else 'w'})",
    family="multi-base",
)
def _abc(cfg: QuantConfig):
    kernel = ABCWeight(cfg.M, cfg.shifts, cfg.alpha_scope, cfg.trainable_shifts)
    if cfg.N == 0:
        return kernel, None
    return kernel, ABCInput(cfg.N, cfg.act_shift_center, cfg.act_shift_spread, cfg.beta_init)


# Activation-only quantizers: binary activations, float weights. The first stage of two-stage
# training (binary activations first, then binary weights from that run: recipe=two_stage_1,
# two_stage_2); not a deployable network of their own (the packed export refuses them).
def _act_only_fields(cfg: QuantConfig) -> tuple[str, ...]:
    return (*LAYER_FIELDS, "N", *_ACT_FIELDS)


def _needs_activation_bases(cfg: QuantConfig) -> None:
    if cfg.N < 1:
        raise ValueError(
            f"{cfg.name} binarises activations with N >= 1 bases, got N={cfg.N} "
            "(float weights and float activations is quant=fp)"
        )


@register_quantizer(
    "abc_act_only",
    fields=_act_only_fields,
    label=lambda cfg: f"abc(fp,{cfg.N})",
    check=_needs_activation_bases,
)
def _abc_act_only(cfg: QuantConfig):
    return None, ABCInput(cfg.N, cfg.act_shift_center, cfg.act_shift_spread, cfg.beta_init)


@register_quantizer("sign_act_only", label=lambda cfg: "sign(fp,1)")
def _sign_act_only(cfg: QuantConfig):
    return None, SignInput()
