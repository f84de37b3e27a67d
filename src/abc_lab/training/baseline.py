"""The closing line of a run: its gap to a matching full-precision run, if one exists.

Matching follows the rules of abc_lab.runs (same key but for the quantizer's own fields,
init_from and the seed); only finished fp runs with test metrics count. Baselines are
searched under ``paths.baseline_roots`` (default: the output and multirun roots) and beside
the run that ``init_from`` named (its directory and its sibling run directories).
"""

from __future__ import annotations

from pathlib import Path

from ..runs import RECORD_NAME, Run, load_runs
from ..runs.baseline import baseline_command, baselines_for
from ..runs.reader import mean
from .checkpoints import run_dir_of


def baseline_roots(record: dict) -> list[Path]:
    """The configured roots (searched recursively); older records lack baseline_roots."""
    paths = (record.get("config") or {}).get("paths") or {}
    roots = paths.get("baseline_roots")
    if roots is None:
        roots = [paths.get("output_dir"), paths.get("multirun_dir")]
    return [Path(r) for r in roots if r]


def init_from_dir(record: dict) -> Path | None:
    """The directory holding the run that ``init_from`` named (its run dir's parent)."""
    init = (record.get("key") or {}).get("init_from")
    return run_dir_of(init).parent if init else None


def describe_gap(record: dict, path: Path) -> str:
    run = Run(path, record)
    if run.is_fp:
        return "this is a full-precision run: binary runs with the same setup compare to it"
    roots = baseline_roots(record)
    searched = [r for r in roots if r.is_dir()]
    where = [str(r) for r in roots]
    beside = init_from_dir(record)
    if beside is not None and beside.is_dir():
        searched += sorted(beside.glob(f"*/{RECORD_NAME}"))  # sibling runs, not recursive
        where.append(f"{beside}/*")
    runs = load_runs(searched).runs if searched else []
    accs = [b.metric("test", "acc1") for b in baselines_for(run, runs)]
    fp = mean(accs)
    acc = run.metric("test", "acc1")
    if fp is None or acc is None:
        return (
            f"no matching full-precision run found (looked in {', '.join(where) or 'nothing'}; "
            f"paths.baseline_roots=[...] adds places); produce one with:\n"
            f"  {baseline_command(run)}"
        )
    n = sum(a is not None for a in accs)
    return (
        f"full precision (same setup, {n} run{'s' if n > 1 else ''}): "
        f"{100 * fp:.2f}% -> gap {100 * (acc - fp):+.2f} points (binary minus fp)"
    )
