"""Checks of a composed config that need no torch, run before the heavy imports.

A rejected override (``quant.M=0``, ``optim.lr=0``) then answers in about a second instead
of after importing torch and Lightning. The full checks (``train.preflight`` and
``QuantConfig``) still run later; the messages here are the same as theirs (a test
compares them).
"""

from __future__ import annotations

import numbers

from omegaconf import DictConfig, OmegaConf

from ..errors import UserError

QUANT_HINT = " (check the quant.* overrides)"


def _count(name: str, value: object, minimum: int) -> None:
    """Same rule and message as ``abc_lab.quant.functional.check_count``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise UserError(f"{name} must be an integer >= {minimum}, got {value!r}{QUANT_HINT}")
    if int(value) < minimum:
        raise UserError(f"{name} must be an integer >= {minimum}, got {int(value)}{QUANT_HINT}")


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _distill_checks(distill: DictConfig | None) -> None:
    """Temperature > 0, weight in [0, 1], feature_weight >= 0 (both 0: distillation off)."""
    if not distill:
        return
    t, w, fw = distill.get("temperature"), distill.get("weight"), distill.get("feature_weight")
    if not _number(t) or t <= 0:
        raise UserError(f"module.distill.temperature={t} must be a number > 0 (e.g. 4.0)")
    if not _number(w) or not 0 <= w <= 1:
        raise UserError(f"module.distill.weight={w} must be a number in [0, 1]")
    if not _number(fw) or fw < 0:
        raise UserError(f"module.distill.feature_weight={fw} must be a number >= 0")


def quick_checks(cfg: DictConfig) -> None:
    """Raise UserError for a field the recipe needs but nobody gave (``recipe.requires``), bad
    base counts, learning rate, epoch count or distillation settings."""
    recipe = cfg.get("recipe")
    for name in (recipe.get("requires") or []) if recipe else []:
        try:
            value = OmegaConf.select(cfg, name)
        except Exception:  # an interpolation that fails: preflight reports its own error
            continue
        if value in (None, ""):
            raise UserError(
                f"recipe={recipe.name} needs {name}; pass {name}=<value> "
                f"(see conf/recipe/{recipe.name}.yaml)"
            )
    quant = cfg.get("quant")
    if quant is not None:
        _count("M", quant.get("M", 3), 1)
        _count("N", quant.get("N", 3), 0)
    lr = cfg.optim.get("lr")
    if not isinstance(lr, int | float) or isinstance(lr, bool) or lr <= 0:
        raise UserError(f"learning rate optim.lr={lr} must be a number > 0; pass e.g. optim.lr=0.1")
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise UserError(f"trainer.max_epochs={epochs} must be an integer >= 1")
    module = cfg.get("module")
    _distill_checks(module.get("distill") if module is not None else None)
