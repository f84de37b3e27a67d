"""The run key: what makes two runs the same experiment, derived from the resolved config.

Every config leaf is part of the key (as a dotted name, ``optim.momentum``) unless it is on
:data:`EXCLUDED`, the short list of fields that cannot change a result: where outputs go,
how progress is shown and logged, how data is loaded, what to resume from. The quantizer's
own block keeps only the fields the quantizer reads (the record's ``quant.fields``): an fp
run with ``quant.M=5`` is the same run as with ``quant.M=3``.

Two rules stand on the key:

- seeds: runs whose keys are equal except :data:`SEED_FIELDS` are one configuration (a row
  with mean ± std over seeds);
- baselines: a binary run is compared with fp runs whose keys are equal except the
  quantizer's own fields (:data:`QUANTIZER_FIELDS`), ``init_from`` and the seed.

Fields that older records lack count as their :data:`KEY_DEFAULTS` value; any other field
one key has and the other lacks makes the two unmatched, and :func:`differences` names it.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterable, Mapping
from typing import Any

# Config fields that cannot change a result, with the reason; everything else is the key.
EXCLUDED: dict[str, str] = {
    "hydra.*": "Hydra's own settings (run directories, overrides, logging)",
    "paths.*": "where outputs, data and reports live",
    "data.data_dir": "where the data is read from",
    "data.download": "whether missing data may be downloaded",
    "data.num_workers": "data-loading processes",
    "data.eval_batch_size": "evaluation batch size (eval mode: no batch statistics)",
    "trainer.default_root_dir": "output directory",
    "trainer.log_every_n_steps": "logging frequency",
    "trainer.enable_model_summary": "console output",
    "trainer.num_sanity_val_steps": "a validation pass before training (no update)",
    "trainer.accelerator": "which device runs the same computation",
    "trainer.deterministic": "bitwise reproducibility, not the computation",
    "logger.*": "experiment tracking",
    "callbacks.*": "checkpoints, progress bars, learning-rate logging",
    "module.log_quant_every_n_epochs": "logging frequency",
    "*._target_": "the code path that builds a group's choice (its name field is the key)",
    "*._partial_": "how a group's choice is built",
    "task_name": "the job's name",
    "variant": "a study variant's name (its quantizer, seed and init_from are the key)",
    "recipe.*": "a training recipe's name and required fields (the settings it makes are the key)",
    "ckpt_path": "resuming continues the same run",
    "test": "whether the test set is evaluated at the end",
    "kernel": "compiled or eager kernels compute the same values",
    "compile": "a compiled whole model computes the same values",
    "print_config": "console output",
    "tags": "W&B tags",
    "optimized_metric": "which metric a Hydra sweeper reads from the finished run",
}
# Fields that tell seeds apart (data.seed follows seed: it draws the validation split).
SEED_FIELDS = ("seed", "data.seed")
# Fields a binary run and its fp baseline may differ in besides the seed.
QUANTIZER_FIELDS = ("quant.*", "module.quant_lr_scale", "init_from")
# How a network is trained from its start: a binary run started from an fp run (init_from)
# is compared with that fp configuration even where these differ (a fine-tuning recipe:
# fewer epochs, a smaller lr, parameter groups, distillation, training augmentation on or
# off); reports list the differences. The data themselves (dataset, split, subset, batch
# size) stay part of the setup.
RECIPE_FIELDS = (
    "data.augment",
    "optim.*",
    "schedule.*",
    "trainer.max_epochs",
    "trainer.max_steps",
    "trainer.gradient_clip_val",
    "module.label_smoothing",
    "module.param_groups.*",
    "module.distill.*",
)
# A path that differs per seed, compared by what it points at (see variant_of).
TEACHER_FIELD = "module.distill.teacher"
# Key fields added after records first carried them: an older record lacks them and counts
# as this value (the behaviour of the code that wrote it).
KEY_DEFAULTS: dict[str, Any] = {
    "quant.bnn_scale": "none",
    "quant.act_calibration": None,
    "trainer.precision": "32-true",
    "trainer.gradient_clip_val": None,
    "module.param_groups.binary": None,
    "module.param_groups.quant": None,
    "module.param_groups.float": None,
    "module.distill.teacher": None,
    "module.distill.temperature": 4.0,
    "module.distill.weight": 0.5,
    "module.distill.feature_weight": 0.0,
    "module.distill.feature_layers": None,
}


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested config -> ``{"dotted.name": leaf}``; lists stay leaves, empty mappings vanish."""
    flat: dict[str, Any] = {}
    for name, value in config.items():
        dotted = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, dotted + "."))
        else:
            flat[dotted] = list(value) if isinstance(value, tuple) else value
    return flat


def matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def is_excluded(name: str) -> bool:
    """Whether config field ``name`` cannot change a result (see :data:`EXCLUDED`)."""
    return matches(name, EXCLUDED)


DISTILL_FIELDS = tuple(k for k in KEY_DEFAULTS if k.startswith("module.distill."))


def distill_active(flat: Mapping[str, Any]) -> bool:
    """Whether a flat config distils: a teacher and a term that weighs something."""
    return bool(flat.get(TEACHER_FIELD)) and bool(
        flat.get("module.distill.weight") or flat.get("module.distill.feature_weight")
    )


def derive_key(config: Mapping[str, Any], quant_fields: Iterable[str]) -> dict[str, Any]:
    """The run key of a resolved config: every leaf but :data:`EXCLUDED` ones; of the quantizer
    block only ``quant.name`` and the ``quant_fields`` the quantizer reads. Distillation that is
    off (no teacher, or a teacher whose terms weigh 0) keys as the defaults, whatever its
    inert settings say."""
    used = {f"quant.{name}" for name in quant_fields} | {"quant.name"}
    flat = flatten(config)
    if not distill_active(flat):
        flat.update({k: KEY_DEFAULTS[k] for k in DISTILL_FIELDS if k in flat})
    return {
        name: value
        for name, value in sorted(flat.items())
        if not is_excluded(name) and (not name.startswith("quant.") or name in used)
    }


def _with_defaults(key: Mapping[str, Any]) -> dict[str, Any]:
    return {**KEY_DEFAULTS, **key}


def _frozen(items: Mapping[str, Any]) -> tuple:
    return tuple(sorted((k, json.dumps(v, sort_keys=True, default=str)) for k, v in items.items()))


def without(key: Mapping[str, Any], patterns: Iterable[str]) -> dict[str, Any]:
    patterns = tuple(patterns)
    return {k: v for k, v in key.items() if not matches(k, patterns)}


def setup_of(key: Mapping[str, Any]) -> tuple:
    """What a binary run and its fp baseline share: the key less quantizer fields and seed."""
    return _frozen(without(_with_defaults(key), (*QUANTIZER_FIELDS, *SEED_FIELDS)))


def variant_of(
    key: Mapping[str, Any], init_source: Any = None, teacher_source: Any = None
) -> tuple:
    """What runs averaged over seeds share: the key less the seed. ``init_from`` (a path that
    differs per seed) is replaced by ``init_source``, what the start checkpoint was; a
    distillation teacher's path likewise by ``teacher_source``, the teacher's run."""
    rest = without(_with_defaults(key), (*SEED_FIELDS, "init_from"))
    if rest.get(TEACHER_FIELD) is None:
        return (_frozen(rest), json.dumps(init_source, sort_keys=True, default=str))
    rest.pop(TEACHER_FIELD)
    return (
        _frozen(rest),
        json.dumps(init_source, sort_keys=True, default=str),
        json.dumps(teacher_source, sort_keys=True, default=str),
    )


def _variant_pairs(variant: str) -> dict[str, str] | None:
    """The key pairs of a variant serialised as JSON (a record's ``init.source.variant``)."""
    try:
        pairs = json.loads(variant)[0]
        return {str(k): str(v) for k, v in pairs}
    except (ValueError, TypeError, IndexError, KeyError):
        return None


def is_fp_variant(variant: Any) -> bool:
    """Whether a serialised variant (``init.source.variant``) is a full-precision run's."""
    pairs = _variant_pairs(variant) if isinstance(variant, str) else None
    return pairs is not None and pairs.get("quant.name") == json.dumps("fp")


def fine_tune_setup(key: Mapping[str, Any], fp_origin: str) -> tuple | None:
    """The setup of the fp configuration a binary run was started from (``fp_origin``, that
    run's serialised variant), when the two differ in nothing but the quantizer, the seed and
    :data:`RECIPE_FIELDS`; else None (the run keeps its own setup)."""
    if not is_fp_variant(fp_origin):
        return None
    pairs = _variant_pairs(fp_origin) or {}
    for name, value in KEY_DEFAULTS.items():  # fields added since the origin was recorded
        pairs.setdefault(name, json.dumps(value, sort_keys=True, default=str))
    origin = tuple(sorted((k, v) for k, v in pairs.items() if not matches(k, QUANTIZER_FIELDS)))
    problem = without(_with_defaults(key), (*QUANTIZER_FIELDS, *SEED_FIELDS, *RECIPE_FIELDS))
    if _frozen(problem) != tuple((k, v) for k, v in origin if not matches(k, RECIPE_FIELDS)):
        return None
    return origin


def differences(a: Mapping[str, Any], b: Mapping[str, Any], setup_only: bool = True) -> list[str]:
    """Fields where key ``a`` differs from key ``b``, as ``optim.lr 0.1 vs 0.05`` (``missing``
    where one key lacks the field and no default is known)."""
    a, b = _with_defaults(a), _with_defaults(b)
    skip = (*QUANTIZER_FIELDS, *SEED_FIELDS) if setup_only else ()
    out = []
    for name in sorted(set(a) | set(b)):
        if matches(name, skip):
            continue
        if name not in a or name not in b or a[name] != b[name]:
            left = override_value(a[name]) if name in a else "missing"
            right = override_value(b[name]) if name in b else "missing"
            out.append(f"{name} {left} vs {right}")
    return out


def override_value(value: Any) -> str:
    """A key value as written in a Hydra override (``true``, ``null``, ``0.1``, ``[a,b]``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ",".join(override_value(v) for v in value) + "]"
    if isinstance(value, str) and any(c in value for c in " ,[]{}()=*'\""):
        return "'" + value.replace("'", "\\'") + "'"
    return str(value)
