"""Comparison reports: binary runs against their full-precision baselines.

Reads run records (``results.json``, docs/run-record.md) and nothing else; writes
``reports/<name>/report.md``, a self-contained ``report.html`` and PNG figures.
"""

from .build import build_report
from .matching import Group, Row, Stat, baseline_command, build_groups
from .records import LoadResult, Problem, Run, load_runs

__all__ = [
    "Group",
    "LoadResult",
    "Problem",
    "Row",
    "Run",
    "Stat",
    "baseline_command",
    "build_groups",
    "build_report",
    "load_runs",
]
