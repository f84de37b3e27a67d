"""Match binary runs with their full-precision baseline and aggregate seeds.

A binary run is compared only with full-precision runs (``key.quant == "fp"``) of the same
model, data and training setup (:data:`~abc_lab.reports.records.SETUP_FIELDS`); the quantizer
fields, the seed and ``init_from`` may differ. Runs that differ only by seed form one row
(mean ± sample std). A group without a baseline carries the command that would produce it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .records import KEY_DEFAULTS, QUANT_FIELDS, SETUP_FIELDS, Run

FP = "fp"
QUANT_ORDER = ("fp", "bnn", "bwn", "xnor", "abc")
# XNOR-Net's argument: one 64-bit XNOR + popcount does 64 binary multiply-adds in about the
# time of one float multiply-add, so a layer with M·N binary bases runs 64 / (M·N) times faster.
POPCOUNT_WIDTH = 64


@dataclass(frozen=True)
class Stat:
    """Values over seeds; ``std`` is the sample standard deviation (None for one value)."""

    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return statistics.fmean(self.values)

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if self.n > 1 else None


def stat(values: Iterable[float | None]) -> Stat | None:
    """A :class:`Stat` of the values that are present, or None when there are none."""
    present = tuple(float(v) for v in values if v is not None and math.isfinite(v))
    return Stat(present) if present else None


def setup_value(key: Mapping[str, Any], name: str) -> Any:
    """A setup field of a run key; fields older records lack take their KEY_DEFAULTS value."""
    value = key.get(name)
    return KEY_DEFAULTS.get(name) if value is None else value


def setup_of(key: Mapping[str, Any]) -> tuple:
    """The part of a run key a binary run and its baseline must share."""
    return tuple(setup_value(key, name) for name in SETUP_FIELDS)


def variant_of(key: Mapping[str, Any]) -> tuple:
    """Everything that makes runs differ except the seed (rows aggregate over seeds)."""
    return (*(key.get(name) for name in QUANT_FIELDS), bool(key.get("init_from")))


def hydra_value(value: Any) -> str:
    """A key value as written in a Hydra override (``true``, ``null``, ``0.1``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return str(value)


def baseline_command(key: Mapping[str, Any], seed: Any | None = None) -> str:
    """The ``abc-lab train`` command that produces the fp baseline for a run with ``key``.

    The one place that knows how key fields map to config overrides.
    """
    seed = key.get("seed") if seed is None else seed
    v = hydra_value
    parts = [
        "abc-lab train",
        f"model={v(key['model'])}",
        f"data={v(key['data'])}",
        "quant=fp",
        f"trainer.max_epochs={v(key['epochs'])}",
        f"optim={v(key['optimizer'])}",
        f"optim.lr={v(key['lr'])}",
        f"optim.weight_decay={v(key['weight_decay'])}",
        f"schedule={v(key['schedule'])}",
        f"schedule.warmup_epochs={v(key['warmup_epochs'])}",
        f"data.batch_size={v(key['batch_size'])}",
        f"data.augment={v(key['augment'])}",
        f"seed={v(seed)}",
    ]
    if key.get("train_subset") is not None:
        parts.append(f"data.train_subset={v(key['train_subset'])}")
    if key.get("label_smoothing"):
        parts.append(f"module.label_smoothing={v(key['label_smoothing'])}")
    if setup_value(key, "precision") != KEY_DEFAULTS["precision"]:
        parts.append(f"trainer.precision={v(key['precision'])}")
    if setup_value(key, "gradient_clip_val") != KEY_DEFAULTS["gradient_clip_val"]:
        parts.append(f"trainer.gradient_clip_val={v(key['gradient_clip_val'])}")
    return " ".join(parts)


def setup_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Setup fields where key ``a`` differs from key ``b``, as ``epochs 5 vs 10``."""
    return [
        f"{name} {hydra_value(setup_value(a, name))} vs {hydra_value(setup_value(b, name))}"
        for name in SETUP_FIELDS
        if setup_value(a, name) != setup_value(b, name)
    ]


@dataclass
class Row:
    """All finished runs of one variant (same setup and quantizer, any seed)."""

    runs: list[Run]
    metric: str = "test"
    label: str = ""
    top1: Stat | None = None
    top5: Stat | None = None
    wall_time_s: Stat | None = None
    throughput: Stat | None = None
    gap: float | None = None  # top-1 points against the baseline mean
    rel_throughput: float | None = None

    @property
    def key(self) -> Mapping[str, Any]:
        return self.runs[0].key

    @property
    def quant(self) -> str:
        return self.runs[0].quant

    @property
    def base_label(self) -> str:
        return self.runs[0].label

    @property
    def M(self) -> int | None:
        return self.key.get("M")

    @property
    def N(self) -> int | None:
        return self.key.get("N")

    @property
    def seeds(self) -> list[Any]:
        return [run.seed for run in self.runs]

    @property
    def initialised(self) -> bool:
        return any(run.init_from for run in self.runs)

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.runs[0].summary

    @property
    def binary_speedup(self) -> float | None:
        """Theoretical speed-up of the binary MACs against float MACs, 64 / (M·N)."""
        s = self.summary
        macs, ops = s.get("binary_macs") or 0, s.get("binary_ops") or 0
        if macs > 0 and ops > 0:
            return POPCOUNT_WIDTH * macs / ops
        if self.quant in ("bnn", "xnor"):
            return float(POPCOUNT_WIDTH)
        if self.quant == "abc" and self.M and self.N:
            return POPCOUNT_WIDTH / (self.M * self.N)
        return None

    @property
    def model_speedup(self) -> float | None:
        """Whole-model estimate: all MACs / (float MACs + binary ops / 64)."""
        s = self.summary
        macs, fmacs, ops = s.get("macs") or 0, s.get("float_macs") or 0, s.get("binary_ops") or 0
        cost = fmacs + ops / POPCOUNT_WIDTH
        return macs / cost if macs > 0 and cost > 0 else None

    def sort_key(self) -> tuple:
        order = QUANT_ORDER.index(self.quant) if self.quant in QUANT_ORDER else len(QUANT_ORDER)
        return (
            order,
            self.quant,
            self.M if self.M is not None else -1,
            self.N if self.N is not None else -1,
            str(variant_of(self.key)),
        )


@dataclass
class Group:
    """Runs of one model, data and training setup: a baseline row and the binary rows."""

    key: Mapping[str, Any]  # key of the first run; only its setup fields matter
    metric: str
    baseline: Row | None
    rows: list[Row]
    commands: list[str] = field(default_factory=list)  # baseline commands when missing
    notes: list[str] = field(default_factory=list)  # near misses and other remarks

    @property
    def model(self) -> str:
        return str(self.key["model"])

    @property
    def data(self) -> str:
        return str(self.key["data"])

    @property
    def setup(self) -> dict[str, Any]:
        return {name: setup_value(self.key, name) for name in SETUP_FIELDS}

    @property
    def all_rows(self) -> list[Row]:
        return ([self.baseline] if self.baseline else []) + self.rows


def run_accuracy(run: Run, metric: str, name: str = "acc1") -> float | None:
    """Accuracy fraction of ``run`` from ``metrics[metric]``."""
    return run.metric(metric, name)


def has_accuracy(run: Run) -> bool:
    return run.metric("test", "acc1") is not None or run.metric("val", "acc1") is not None


def _row(runs: list[Run], metric: str) -> Row:
    runs = sorted(runs, key=lambda r: (str(r.seed), str(r.path)))
    return Row(
        runs=runs,
        metric=metric,
        top1=stat(run_accuracy(r, metric, "acc1") for r in runs),
        top5=stat(run_accuracy(r, metric, "acc5") for r in runs),
        wall_time_s=stat(r.wall_time_s for r in runs),
        throughput=stat(r.train_samples_per_s for r in runs),
    )


_SUFFIX_FIELDS = ("alpha_scope", "trainable_shifts", "act_shift", "init")


def _suffix_value(row: Row, name: str) -> Any:
    key = row.key
    if name == "act_shift":
        return (key.get("act_shift_center"), key.get("act_shift_spread"))
    if name == "init":
        return row.initialised
    return key.get(name)


def _suffix_text(row: Row, name: str) -> str:
    value = _suffix_value(row, name)
    if name == "alpha_scope":
        return f"α per {value}"
    if name == "trainable_shifts":
        return "trainable u" if value else "fixed u"
    if name == "act_shift":
        return f"v {value[0]}±{value[1]}"
    return "from ckpt" if value else "from scratch"


def assign_labels(rows: Sequence[Row]) -> None:
    """Display labels: the record label, plus what tells apart rows that share it."""
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row.base_label, []).append(row)
    for label, same in by_label.items():
        varying = [
            name for name in _SUFFIX_FIELDS if len({repr(_suffix_value(r, name)) for r in same}) > 1
        ]
        for row in same:
            extra = ", ".join(_suffix_text(row, name) for name in varying)
            row.label = f"{label} [{extra}]" if extra else label


def build_groups(finished: Sequence[Run], others: Sequence[Run] = ()) -> list[Group]:
    """Group finished runs by setup, aggregate seeds, match each group with its fp baseline.

    ``finished`` must hold runs with an accuracy. ``others`` (running, failed, stopped runs)
    only feed the notes of groups whose baseline is missing.
    """
    by_setup: dict[tuple, list[Run]] = {}
    for run in finished:
        by_setup.setdefault(setup_of(run.key), []).append(run)

    groups: list[Group] = []
    for runs in by_setup.values():
        metric = "test" if all(r.metric("test", "acc1") is not None for r in runs) else "val"
        fp_runs = [r for r in runs if r.quant == FP]
        baseline = _row(fp_runs, metric) if fp_runs else None
        by_variant: dict[tuple, list[Run]] = {}
        for run in runs:
            if run.quant != FP:
                by_variant.setdefault(variant_of(run.key), []).append(run)
        rows = sorted((_row(rs, metric) for rs in by_variant.values()), key=Row.sort_key)
        group = Group(key=runs[0].key, metric=metric, baseline=baseline, rows=rows)
        assign_labels(group.all_rows)
        group.notes += _duplicate_seed_notes(group.all_rows)
        group.notes += _chance_notes(group.all_rows, metric)
        if baseline is not None:
            _compare(group)
        else:
            _explain_missing(group, finished, others)
        groups.append(group)
    groups.sort(key=lambda g: (g.model, g.data, [str(v) for v in setup_of(g.key)]))
    return groups


CHANCE_MARGIN = 0.02  # top-1 within 2 points of 1/classes counts as chance level


def _chance_notes(rows: Sequence[Row], metric: str) -> list[str]:
    """Runs whose top-1 is chance level learned nothing (diverged or collapsed): say so,
    so that a number like 10% is never read as a weak but working configuration."""
    notes = []
    for row in rows:
        for run in row.runs:
            classes = ((run.record.get("config") or {}).get("model") or {}).get("num_classes")
            top1 = run.metric(metric, "acc1")
            if not isinstance(classes, int) or classes < 2 or top1 is None:
                continue
            if top1 <= 1.0 / classes + CHANCE_MARGIN:
                losses = [h.get("train_loss") for h in run.history if h.get("train_loss")]
                loss = (
                    f"; its training loss ended at {losses[-1]:.3f} (ln {classes} = "
                    f"{math.log(classes):.3f}: uniform predictions)"
                    if losses
                    else ""
                )
                notes.append(
                    f"{row.label} (seed {run.seed}): {metric} top-1 {100 * top1:.2f}% is chance "
                    f"level for {classes} classes: the run learned nothing{loss}"
                )
    return notes


def _duplicate_seed_notes(rows: Sequence[Row]) -> list[str]:
    """Runs of one row that share a seed are all averaged; say so (reruns, copied dirs)."""
    notes = []
    for row in rows:
        seeds = [str(s) for s in row.seeds]
        for seed in sorted({s for s in seeds if seeds.count(s) > 1}):
            paths = ", ".join(str(r.path) for r in row.runs if str(r.seed) == seed)
            notes.append(
                f"{row.label}: seed {seed} appears {seeds.count(seed)} times, all averaged: {paths}"
            )
    return notes


def _compare(group: Group) -> None:
    base = group.baseline
    assert base is not None
    for row in group.rows:
        if row.top1 is not None and base.top1 is not None:
            row.gap = 100.0 * (row.top1.mean - base.top1.mean)
        if row.throughput is not None and base.throughput is not None:
            row.rel_throughput = row.throughput.mean / base.throughput.mean
    base.gap = 0.0
    base.rel_throughput = 1.0 if base.throughput is not None else None


def _explain_missing(group: Group, finished: Sequence[Run], others: Sequence[Run]) -> None:
    seeds = sorted({run.seed for row in group.rows for run in row.runs}, key=str)
    group.commands = [baseline_command(group.key, seed) for seed in seeds]
    setup = setup_of(group.key)
    for run in others:
        if run.quant == FP and setup_of(run.key) == setup:
            group.notes.append(f"an fp run with this setup exists but is {run.status}: {run.path}")
    for run in finished:
        if (
            run.quant == FP
            and run.key.get("model") == group.model
            and run.key.get("data") == group.data
            and setup_of(run.key) != setup
        ):
            diffs = "; ".join(setup_differences(run.key, group.key))
            group.notes.append(
                f"fp run not used as baseline, its training setup differs "
                f"(fp vs these runs: {diffs}): {run.path}"
            )
