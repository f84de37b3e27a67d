"""Run records as sweeps use them: read one, mark it stopped or failed; the sweep metric
names (``val/acc1``, ``best_val/acc1``, ...) and their values come from abc_lab.runs.metrics.

Sweeps read records and nothing else: they never import training internals.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..runs import now_iso, read_run, write_record
from ..runs.metrics import EPOCH_METRICS, METRICS, metric_history, metric_value, summary_metrics

__all__ = [
    "EPOCH_METRICS",
    "METRICS",
    "mark_record",
    "metric_history",
    "metric_value",
    "read_record",
    "summary_metrics",
]


def read_record(path: Path) -> dict[str, Any] | None:
    """The run record at ``path`` (a file or a run dir), or None if absent or unusable."""
    run = read_run(path)
    return None if run is None else dict(run.record)


def mark_record(run_dir: Path, status: str, error: str | None = None) -> dict[str, Any] | None:
    """Set the status (e.g. ``stopped`` by early termination) of the record in ``run_dir``."""
    record = read_record(run_dir)
    if record is None:
        return None
    record["status"] = status
    record["error"] = error
    record["finished_at"] = record.get("finished_at") or now_iso()
    write_record(Path(run_dir), record)
    return record
