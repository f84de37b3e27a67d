"""Measured inference speed from ``<run dir>/inference.json`` (written by the bitwise engine's
``abc-lab evaluate`` and ``abc-lab bench --inference --run``), next to the theoretical one.

Reports read only files: the run record gives the run directory; its ``inference.json``
gives the engine's latency against torch float32 on the same architecture and the
engine's own test top-1.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .document import Table
from .grouping import Group, Row

FILE = "inference.json"
SCHEMA = "abc-lab/inference"


def read_inference(row: Row) -> Mapping[str, Any] | None:
    """The first readable inference.json among a row's runs (record's run_dir, then beside it)."""
    for run in row.runs:
        for folder in (run.record.get("run_dir"), Path(run.path).parent):
            if not folder:
                continue
            try:
                data = json.loads((Path(folder) / FILE).read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict) and data.get("schema") == SCHEMA:
                return data
    return None


def latency(data: Mapping[str, Any] | None, batch: int = 1, threads: int = 1) -> dict | None:
    """The latency entry for one batch size and thread count, if measured."""
    for entry in (data or {}).get("latency") or []:
        if entry.get("batch") == batch and entry.get("threads") == threads:
            return entry
    return None


def _rows(group: Group) -> list[Row]:
    rows = list(group.rows)
    if group.baseline is not None and group.baseline not in rows:
        rows.insert(0, group.baseline)
    return rows


def measured_table(group: Group) -> Table | None:
    """Theoretical against measured whole-model speed-up, per configuration with a measurement."""
    from .tables import fmt_ratio

    lines = []
    for row in _rows(group):
        data = read_inference(row)
        one, many = latency(data, 1, 1), None
        for entry in (data or {}).get("latency") or []:
            if entry.get("batch") == 1 and entry.get("threads", 1) > 1:
                many = entry
        if one is None and many is None:
            continue
        ev = (data or {}).get("evaluate") or {}
        lines.append([
            row.label or row.base_label,
            "" if row.top1 is None else f"{100 * row.top1.mean:.2f}",
            "" if ev.get("top1_engine") is None else f"{100 * ev['top1_engine']:.2f}",
            fmt_ratio(row.model_speedup),
            "" if one is None else f"{one['engine_ms']:.2f}",
            "" if one is None else fmt_ratio(one["speedup_fp32"]),
            "" if many is None else fmt_ratio(many["speedup_fp32"]),
            "" if one is None or one.get("speedup_bf16") is None
            else fmt_ratio(one["speedup_bf16"]),
        ])  # fmt: skip
    if not lines:
        return None
    headers = [
        "quantizer", "top-1 % (record)", "top-1 % (engine)", "speed-up model (theory)",
        "engine ms (b1, 1 thr.)", "measured × fp32 (b1, 1 thr.)", "measured × fp32 (b1, all)",
        "measured × bf16 (b1, 1 thr.)",
    ]  # fmt: skip
    return Table(
        headers, lines, ["left"] + ["right"] * (len(headers) - 1),
        caption="Measured: the bitwise engine (abc-lab bench --inference --run) against torch "
        "float32 / bfloat16 on the same architecture, batch 1, medians of interleaved rounds.",
    )  # fmt: skip


def latency_figure(group: Group, title: str, path: Path) -> bool:
    """Top-1 against measured engine latency (batch 1, one thread): which (M, N) is worth it."""
    points = []
    fp32 = None
    for row in _rows(group):
        entry = latency(read_inference(row))
        if entry is None or row.top1 is None:
            continue
        points.append((entry["engine_ms"], 100 * row.top1.mean, row.label or row.base_label))
        fp32 = fp32 or entry.get("fp32_ms")
    if not points:
        return False
    from matplotlib.figure import Figure

    from .figures import _save

    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    for ms, top1, label in points:
        ax.scatter([ms], [top1])
        ax.annotate(label, (ms, top1), textcoords="offset points", xytext=(4, 4), fontsize=8)
    if fp32:
        ax.axvline(fp32, color="grey", linestyle="--", linewidth=1)
        ax.annotate("torch fp32", (fp32, ax.get_ylim()[0]), fontsize=8, color="grey")
    ax.set_xlabel("measured latency, batch 1, one thread (ms)")
    ax.set_ylabel("test top-1 (%)")
    ax.set_title(f"{title}: accuracy against measured cost")
    fig.tight_layout()
    _save(fig, path)
    return True
