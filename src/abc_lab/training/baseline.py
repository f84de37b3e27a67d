"""The closing line of a run: its gap to a matching full-precision run, if one exists.

Matching follows the report's rules (abc_lab.reports.matching): same model, data and
training setup; only finished fp runs with test metrics count.
"""

from __future__ import annotations

from pathlib import Path

from ..reports.matching import FP, baseline_command, run_accuracy, setup_of, stat
from ..reports.records import load_runs


def describe_gap(record: dict) -> str:
    key = record["key"]
    if key["quant"] == FP:
        return "this is a full-precision run: binary runs with the same setup compare to it"
    paths = (record.get("config") or {}).get("paths") or {}
    roots = [Path(p) for p in (paths.get("output_dir"), paths.get("multirun_dir")) if p]
    roots = [r for r in roots if r.is_dir()]
    runs = load_runs(roots).runs if roots else []
    baselines = [
        run_accuracy(r, "test")
        for r in runs
        if r.key.get("quant") == FP and r.status == "finished" and setup_of(r.key) == setup_of(key)
    ]
    s = stat(baselines)
    acc = ((record.get("metrics") or {}).get("test") or {}).get("acc1")
    if s is None or acc is None:
        return f"no matching full-precision run found; produce one with:\n  {baseline_command(key)}"
    return (
        f"full precision (same setup, {s.n} run{'s' if s.n > 1 else ''}): "
        f"{100 * s.mean:.2f}% -> gap {100 * (s.mean - acc):+.2f} points"
    )
