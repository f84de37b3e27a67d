"""Version-1 records (written before the key was derived from the config) read as version 2.

A v1 record has a flat, hand-listed key (``epochs``, ``lr``, ``M``…) and no quantizer
identity. Its v2 key is derived from its stored resolved config when that config is complete,
with the quantizer fields the v1 quantizers read (:data:`V1_QUANT_FIELDS`); otherwise its flat
key is renamed field by field (:data:`V1_FIELDS`). Either way nothing is guessed: a field the
old record does not hold stays absent, and matching against a record that has it says so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .key import derive_key

# v1 flat key field -> v2 dotted config field
V1_FIELDS = {
    "model": "model.name",
    "data": "data.name",
    "quant": "quant.name",
    "M": "quant.M",
    "N": "quant.N",
    "alpha_scope": "quant.alpha_scope",
    "trainable_shifts": "quant.trainable_shifts",
    "act_shift_center": "quant.act_shift_center",
    "act_shift_spread": "quant.act_shift_spread",
    "epochs": "trainer.max_epochs",
    "optimizer": "optim.name",
    "lr": "optim.lr",
    "weight_decay": "optim.weight_decay",
    "schedule": "schedule.name",
    "warmup_epochs": "schedule.warmup_epochs",
    "batch_size": "data.batch_size",
    "augment": "data.augment",
    "train_subset": "data.train_subset",
    "label_smoothing": "module.label_smoothing",
    "precision": "trainer.precision",
    "gradient_clip_val": "trainer.gradient_clip_val",
    "seed": "seed",
    "init_from": "init_from",
}
_LAYER_FIELDS = ("keep_first", "keep_last", "keep_fp")
_ABC_WEIGHT = ("M", "shifts", "alpha_scope", "trainable_shifts")
_ABC_ACT = ("N", "act_shift_center", "act_shift_spread", "beta_init")
# (weight bases, activation bases) of the v1 quantizers other than abc
_V1_BASES = {"fp": (0, 0), "bnn": (1, 1), "bwn": (1, 0), "xnor": (1, 1)}


def v1_quant_fields(name: str, N: int | None) -> tuple[str, ...]:
    """The quantizer config fields the v1 quantizer ``name`` read."""
    if name == "fp":
        return ()
    if name != "abc":
        return _LAYER_FIELDS
    return (*_LAYER_FIELDS, *_ABC_WEIGHT, *(_ABC_ACT if N else ("N",)))


def _complete(config: Any) -> bool:
    return isinstance(config, Mapping) and all(
        isinstance(config.get(g), Mapping) for g in ("model", "data", "quant", "optim", "trainer")
    )


def upgrade(record: Mapping[str, Any]) -> dict[str, Any]:
    """A v1 record as a v2 record: derived key and quantizer identity (the rest is unchanged)."""
    old = dict(record["key"])
    name = str(old["quant"])
    M, N = old.get("M"), old.get("N")
    config = record.get("config")
    if _complete(config):
        key = derive_key(config, v1_quant_fields(name, N))
        key["init_from"] = old.get("init_from")
    else:
        key = {
            V1_FIELDS[f]: value
            for f, value in old.items()
            if f in V1_FIELDS and not (f in ("M", "N") and value is None)
        }
        if name == "fp":
            key = {k: v for k, v in key.items() if not k.startswith("quant.") or k == "quant.name"}
    weights, acts = (M or 1, N or 0) if name == "abc" else _V1_BASES.get(name, (None, None))
    identity = {
        "name": name,
        "label": old.get("label") or name,
        "family": "multi-base" if name == "abc" else name,
        "weight_bases": weights,
        "activation_bases": acts,
        "fields": list(v1_quant_fields(name, N)),
    }
    init = _v1_quant_params_init(record, N, (record.get("config") or {}).get("quant") or {})
    return {
        **record, "version": 2, "key": key, "quant": identity, "quant_params_init": init,
        "upgraded_from": 1,
    }  # fmt: skip


def _v1_quant_params_init(record: Mapping[str, Any], N: Any, quant: Mapping) -> dict:
    """The initial v and β of each ABC layer of a v1 record, which did not store them: v1
    training set v_n = center + spread·linspace(-1, 1, N) (center alone for N = 1) and
    β_n = 1/N or the configured number (an "lsq" start is not reconstructed)."""
    old = record["key"]
    center, spread = old.get("act_shift_center"), old.get("act_shift_spread")
    if not isinstance(N, int) or N < 1 or center is None or spread is None:
        return {}
    if N == 1:
        v0 = [float(center)]
    else:
        v0 = [float(center) + float(spread) * (-1.0 + 2.0 * n / (N - 1)) for n in range(N)]
    beta_init = quant.get("beta_init")
    beta0 = [] if isinstance(beta_init, str) else [1.0 / N if beta_init is None else beta_init] * N
    layers = record.get("quant_params") or {}
    return {name: {"v": v0, "beta": beta0} for name, p in layers.items() if p.get("v")}
