"""Comparison reports: binary runs against their full-precision baselines.

Reads run records (``results.json``, docs/run-record.md) through abc_lab.runs and nothing
else; writes ``reports/<name>/report.md``, a self-contained ``report.html`` and PNG figures.
"""

from .build import build_report
from .grouping import Group, Row, Stat, build_groups

__all__ = ["Group", "Row", "Stat", "build_groups", "build_report"]
