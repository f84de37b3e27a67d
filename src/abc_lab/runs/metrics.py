"""Metric names (``val/acc1``, ``best_val/acc1``, …) read from run records: what sweeps
optimise and early-stop on, and what a training job returns to a Hydra sweeper."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

# Sweep metric name -> (section of record["metrics"], field, history key or None).
METRICS: dict[str, tuple[str, str, str | None]] = {
    "val/acc1": ("val", "acc1", "val_acc1"),
    "val/acc5": ("val", "acc5", "val_acc5"),
    "val/loss": ("val", "loss", "val_loss"),
    "test/acc1": ("test", "acc1", None),
    "test/acc5": ("test", "acc5", None),
    "test/loss": ("test", "loss", None),
    "best_val/acc1": ("best_val", "acc1", "val_acc1"),
}
# Metrics the training logs after every validation epoch, in the record's history and to
# W&B: the ones hyperband can judge a run by, online and offline alike.
EPOCH_METRICS = ("val/acc1", "val/acc5", "val/loss")


def _section(record: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    metrics = record.get("metrics") or {}
    value = metrics.get(section) if isinstance(metrics, Mapping) else None
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None  # NaN is not a measurement


def metric_value(record: Mapping[str, Any], name: str) -> float | None:
    """The final (summary) value of sweep metric ``name`` in a record, or None if not measured."""
    section, field, _ = METRICS[name]
    return _number(_section(record, section).get(field))


def summary_metrics(record: Mapping[str, Any]) -> dict[str, float]:
    """Every sweep metric the record has measured, by sweep metric name."""
    values = {name: metric_value(record, name) for name in METRICS}
    return {name: v for name, v in values.items() if v is not None}


def metric_history(record: Mapping[str, Any]) -> list[dict[str, float]]:
    """One dict per validation epoch, keyed by sweep metric name (best_val/* is a running max)."""
    rows: list[dict[str, float]] = []
    best: float | None = None
    for entry in record.get("history") or []:
        if not isinstance(entry, Mapping):
            continue
        row: dict[str, float] = {}
        for name, (section, _, key) in METRICS.items():
            if key is None or section == "best_val":
                continue
            value = _number(entry.get(key))
            if value is not None:
                row[name] = value
        if "val/acc1" in row:
            best = row["val/acc1"] if best is None else max(best, row["val/acc1"])
        if best is not None:
            row["best_val/acc1"] = best
        epoch = entry.get("epoch")
        if isinstance(epoch, int):
            row["epoch"] = epoch
        rows.append(row)
    return rows
