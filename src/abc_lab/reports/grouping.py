"""The rows and groups of a report: runs grouped by setup, seeds aggregated, each group
compared with its full-precision baseline.

The rules are those of abc_lab.runs: a binary run is compared only with fp runs of the same
setup (the run key less the quantizer's own fields, init_from and the seed); runs whose keys
differ only in the seed form one row (mean ± sample std), its gap with a 95% interval where
the seeds allow one (intervals.py). A group without a baseline carries the command that would
produce it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..runs import Run, differences
from ..runs import key as run_key
from ..runs.baseline import baseline_command
from ..runs.key import matches, override_value
from .intervals import Interval, gap_interval

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
    gap_interval: Interval | None = None  # its 95% interval over seeds (intervals.py)
    rel_throughput: float | None = None

    @property
    def key(self) -> Mapping[str, Any]:
        return self.runs[0].key

    @property
    def run(self) -> Run:
        return self.runs[0]

    @property
    def quant(self) -> str:
        return self.run.quant

    @property
    def base_label(self) -> str:
        return self.run.label

    @property
    def multi_base(self) -> bool:
        return self.run.multi_base

    @property
    def M(self) -> int | None:
        return self.run.M

    @property
    def N(self) -> int | None:
        return self.run.N

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
        identity = self.run.identity
        weights, acts = identity.get("weight_bases"), identity.get("activation_bases")
        if weights and acts:
            return POPCOUNT_WIDTH / (weights * acts)
        return None

    @property
    def model_speedup(self) -> float | None:
        """Whole-model estimate: all MACs / (float MACs + binary ops / 64)."""
        s = self.summary
        macs, fmacs, ops = s.get("macs") or 0, s.get("float_macs") or 0, s.get("binary_ops") or 0
        cost = fmacs + ops / POPCOUNT_WIDTH
        return macs / cost if macs > 0 and cost > 0 else None

    def sort_key(self) -> tuple:
        return (
            not self.run.is_fp,
            self.multi_base,
            self.quant,
            self.M if self.M is not None else -1,
            self.N if self.N is not None else -1,
            str(self.run.variant),
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

    first: Run | None = None  # a run of the group (its setup is the group's)

    @property
    def model(self) -> str:
        return self.first.model if self.first else str(self.key.get("model.name"))

    @property
    def data(self) -> str:
        return self.first.data if self.first else str(self.key.get("data.name"))

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


# Short texts for key fields that often tell rows apart; any other field is shown as name=value.
_SUFFIX_TEXT = {
    "quant.alpha_scope": lambda v: f"α per {v}",
    "quant.trainable_shifts": lambda v: "trainable u" if v else "fixed u",
    "quant.act_shift_center": lambda v: f"v center {v}",
    "quant.act_shift_spread": lambda v: f"v spread {v}",
}


def init_text(row: Row) -> str:
    source = row.run.init_source
    if not source:
        return "from scratch"
    if isinstance(source, dict) and source.get("run"):
        return f"from {source['run']}"
    return "from ckpt"


_GROUPS = "module.param_groups."
_SHORT = {"weight_decay": "wd", "momentum": "mom"}


def _field_parts(key: Mapping[str, Any], varying: Sequence[str]) -> list[str]:
    """Short texts of the varying fields: an optimizer parameter group as one part (``binary:
    adam lr=0.0001 wd=0.0``), other fields as name=value without the ``module.`` prefix."""
    parts: list[str] = []
    groups: dict[str, list[str]] = {}
    for f in varying:
        if f.startswith(_GROUPS) and f.count(".") == 3:
            groups.setdefault(f.rsplit(".", 1)[0], []).append(f)
            continue
        if f in _SUFFIX_TEXT:
            parts.append(_SUFFIX_TEXT[f](key.get(f)))
        else:
            parts.append(f"{f.removeprefix('module.')}={override_value(key.get(f))}")
    for parent, fields in groups.items():
        settings = {f.rsplit(".", 1)[1]: key.get(f) for f in sorted(set(fields) | {
            k for k in key if k.startswith(parent + ".")})}  # fmt: skip
        if all(v is None for v in settings.values()):
            text = "main optimizer"
        else:
            opt = settings.pop("optimizer", None)
            text = " ".join(
                [str(opt)] * (opt is not None)
                + [f"{_SHORT.get(k, k)}={override_value(v)}" for k, v in settings.items()]
            )
        parts.append(f"{parent.removeprefix(_GROUPS)}: {text}")
    return parts


def assign_labels(rows: Sequence[Row]) -> None:
    """Display labels: the record label, plus every key field that tells apart rows sharing
    it (so two configurations are never shown under one name)."""
    by_label: dict[str, list[Row]] = {}
    for row in rows:
        by_label.setdefault(row.base_label, []).append(row)
    for label, same in by_label.items():
        paths = {"seed", "data.seed", "init_from", run_key.TEACHER_FIELD}  # told apart below
        fields = sorted({f for r in same for f in r.key} - paths)
        varying = [f for f in fields if len({repr(r.key.get(f)) for r in same}) > 1]
        init_varies = len({init_text(r) for r in same}) > 1
        for row in same:
            parts = _field_parts(row.key, varying)
            if init_varies:
                parts.append(init_text(row))
            row.label = f"{label} [{', '.join(parts)}]" if parts else label


def build_groups(finished: Sequence[Run], others: Sequence[Run] = ()) -> list[Group]:
    """Group finished runs by setup, aggregate seeds, match each group with its fp baseline.

    ``finished`` must hold runs with an accuracy. ``others`` (running, failed, stopped runs)
    only feed the notes of groups whose baseline is missing.
    """
    by_setup: dict[tuple, list[Run]] = {}
    for run in finished:
        by_setup.setdefault(run.setup, []).append(run)

    groups: list[Group] = []
    for runs in by_setup.values():
        metric = "test" if all(r.metric("test", "acc1") is not None for r in runs) else "val"
        fp_runs = [r for r in runs if r.is_fp]
        baseline = _row(fp_runs, metric) if fp_runs else None
        by_variant: dict[tuple, list[Run]] = {}
        for run in runs:
            if not run.is_fp:
                by_variant.setdefault(run.variant, []).append(run)
        rows = sorted((_row(rs, metric) for rs in by_variant.values()), key=Row.sort_key)
        first = fp_runs[0] if fp_runs else runs[0]
        group = Group(key=first.key, metric=metric, baseline=baseline, rows=rows, first=first)
        assign_labels(group.all_rows)
        group.notes += _recipe_notes(group)
        group.notes += _duplicate_seed_notes(group.all_rows)
        group.notes += _chance_notes(group.all_rows, metric)
        if baseline is not None:
            _compare(group)
        else:
            _explain_missing(group, finished, others)
        groups.append(group)
    groups.sort(key=lambda g: (g.model, g.data, str(g.first.setup if g.first else "")))
    return groups


def _recipe_notes(group: Group) -> list[str]:
    """Binary rows started from the group's fp configuration but trained with another recipe
    (runs.key.RECIPE_FIELDS): each different recipe once, with the rows that used it."""
    first = group.first
    if first is None:
        return []
    by_recipe: dict[tuple[str, ...], list[str]] = {}
    for row in group.rows:
        run = row.runs[0]
        if run.setup == run_key.setup_of(run.key):  # compared by its own setup: no recipe
            continue
        diffs = tuple(
            d for d in differences(run.key, first.key, setup_only=False)
            if matches(d.split(" ", 1)[0], run_key.RECIPE_FIELDS)
        )  # fmt: skip
        if diffs:
            by_recipe.setdefault(diffs, []).append(row.label)
    return [
        f"{', '.join(labels)}: started from the baseline's checkpoints (init_from) and trained "
        f"with another recipe (these runs vs the baseline: {'; '.join(diffs)})"
        for diffs, labels in by_recipe.items()
    ]


CHANCE_MARGIN = 0.02  # top-1 within 2 points of 1/classes counts as chance level


def _chance_notes(rows: Sequence[Row], metric: str) -> list[str]:
    """Runs whose top-1 is chance level learned nothing (diverged or collapsed): say so,
    so that a number like 10% is never read as a weak but working configuration."""
    notes = []
    for row in rows:
        for run in row.runs:
            classes = run.num_classes or (
                ((run.record.get("config") or {}).get("model") or {}).get("num_classes")
            )
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
            if row is not base:
                row.gap_interval = gap_interval(_seed_top1(row), _seed_top1(base))
        if row.throughput is not None and base.throughput is not None:
            row.rel_throughput = row.throughput.mean / base.throughput.mean
    base.gap = 0.0
    base.rel_throughput = 1.0 if base.throughput is not None else None


def _seed_top1(row: Row) -> list[tuple[object, float]]:
    """(seed, top-1) of each run of ``row`` that has the row's metric."""
    pairs = [(run.seed, run_accuracy(run, row.metric, "acc1")) for run in row.runs]
    return [(seed, acc) for seed, acc in pairs if acc is not None and math.isfinite(acc)]


def _explain_missing(group: Group, finished: Sequence[Run], others: Sequence[Run]) -> None:
    first = group.first
    assert first is not None
    seeds = sorted({run.seed for row in group.rows for run in row.runs}, key=str)
    group.commands = [baseline_command(first, seed) for seed in seeds]
    for run in others:
        if run.is_fp and run.setup == first.setup:
            group.notes.append(f"an fp run with this setup exists but is {run.status}: {run.path}")
    for run in finished:
        if (
            run.is_fp
            and run.model == group.model
            and run.data == group.data
            and run.setup != first.setup
        ):
            diffs = "; ".join(differences(run.key, first.key))
            group.notes.append(
                f"fp run not used as baseline, its training setup differs "
                f"(fp vs these runs: {diffs}): {run.path}"
            )
