"""Full-precision baselines: which fp runs a binary run is compared with, and the exact
command that trains one when none exists."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .key import KEY_DEFAULTS, QUANTIZER_FIELDS, SEED_FIELDS, matches, override_value
from .legacy import V1_FIELDS
from .reader import Run

# Overrides a baseline command leaves out: the quantizer's own, the seed (set explicitly),
# what only names or places the run, and a binary training recipe (recipe presets,
# distillation, parameter groups).
_DROPPED = (
    *QUANTIZER_FIELDS, "quant", *SEED_FIELDS, "variant", "ckpt_path", "hydra.*", "hydra",
    "recipe", "recipe.*", "module.distill.*", "module.param_groups.*",
)  # fmt: skip
# Config groups whose choice a key holds as <group>.name (overridden as group=name).
_GROUPS = ("model", "data", "optim", "schedule")


def is_baseline_for(candidate: Run, run: Run) -> bool:
    """A finished fp run with the same setup as ``run`` (``Run.setup``: for a run started from
    an fp run, the setup of that fp configuration)."""
    return candidate.is_fp and candidate.status == "finished" and candidate.setup == run.setup


def baselines_for(run: Run, candidates: Iterable[Run]) -> list[Run]:
    return [c for c in candidates if is_baseline_for(c, run)]


def _override_key(item: str) -> str:
    return item.split("=", 1)[0].strip().lstrip("+~")


def baseline_command(run: Run, seed: Any | None = None) -> str:
    """The ``abc-lab train`` command that trains the fp baseline of ``run``.

    It repeats the run's own command-line overrides (experiment presets, limits, every
    option) less the quantizer's, then asks for ``quant=fp`` and the seed. Older records
    without their overrides get the overrides of the setup fields they hold."""
    seed = run.seed if seed is None else seed
    if run.overrides is not None:
        kept = [o for o in run.overrides if not matches(_override_key(o), _DROPPED)]
    else:
        kept = _overrides_from_key(run)
    return " ".join(["abc-lab train", *kept, "quant=fp", f"seed={override_value(seed)}"])


def _overrides_from_key(run: Run) -> list[str]:
    out = []
    for field in V1_FIELDS.values():
        value = run.key.get(field)
        if matches(field, _DROPPED) or value is None or value == KEY_DEFAULTS.get(field):
            continue
        group = field.removesuffix(".name")
        name = group if field.endswith(".name") and group in _GROUPS else field
        out.append(f"{name}={override_value(value)}")
    return out
