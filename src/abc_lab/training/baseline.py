"""The closing line of a run: its gap to a matching full-precision run, if one exists.

Matching follows the rules of abc_lab.runs (same key but for the quantizer's own fields,
init_from and the seed); only finished fp runs with test metrics count.
"""

from __future__ import annotations

from pathlib import Path

from ..runs import Run, load_runs
from ..runs.baseline import baseline_command, baselines_for
from ..runs.reader import mean


def describe_gap(record: dict, path: Path) -> str:
    run = Run(path, record)
    if run.is_fp:
        return "this is a full-precision run: binary runs with the same setup compare to it"
    paths = (record.get("config") or {}).get("paths") or {}
    roots = [Path(p) for p in (paths.get("output_dir"), paths.get("multirun_dir")) if p]
    roots = [r for r in roots if r.is_dir()]
    runs = load_runs(roots).runs if roots else []
    accs = [b.metric("test", "acc1") for b in baselines_for(run, runs)]
    fp = mean(accs)
    acc = run.metric("test", "acc1")
    if fp is None or acc is None:
        return f"no matching full-precision run found; produce one with:\n  {baseline_command(run)}"
    n = sum(a is not None for a in accs)
    return (
        f"full precision (same setup, {n} run{'s' if n > 1 else ''}): "
        f"{100 * fp:.2f}% -> gap {100 * (acc - fp):+.2f} points (binary minus fp)"
    )
