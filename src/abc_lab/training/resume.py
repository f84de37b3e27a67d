"""Resuming a run in its own directory continues its history outside results.json too.

``ckpt_path=last hydra.run.dir=<run dir>`` continues the same W&B run (by the id in the
run's record), keeps the CSV rows logged before the interruption, and keeps the record's
start time (RunRecorder adds the time already spent to ``wall_time_s``).
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..runs import read_run


def previous_record(run_dir: Path) -> dict[str, Any] | None:
    """The record an earlier job left in ``run_dir``, or None (absent or unusable)."""
    run = read_run(Path(run_dir))
    return None if run is None else dict(run.record)


def wandb_id(record: dict[str, Any] | None) -> str | None:
    """The W&B run id of a previous record, to resume that run instead of starting one."""
    w = (record or {}).get("wandb") or {}
    return w.get("id") if isinstance(w, dict) else None


def read_metrics_rows(path: Path, up_to_step: int | None) -> tuple[list[str], list[dict]]:
    """Header and rows of a CSVLogger ``metrics.csv``; rows logged after ``up_to_step`` (the
    resumed checkpoint's step, which the resumed job logs again) are left out."""
    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = list(reader.fieldnames or [])
    except OSError:
        return [], []

    def keep(row: dict) -> bool:
        if up_to_step is None:
            return True
        try:
            return int(float(row.get("step") or 0)) <= up_to_step
        except ValueError:
            return True

    return header, [r for r in rows if keep(r)]


def continue_csv(logger: Any, up_to_step: int | None) -> int:
    """Make a Lightning CSVLogger append to the ``metrics.csv`` of the run it resumes.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts; the earlier
    rows are read first and written back, so later saves append (or rewrite with a wider
    header, keeping them). Returns the number of rows kept.
    """
    path = Path(logger.log_dir) / "metrics.csv"
    header, rows = read_metrics_rows(path, up_to_step)
    if not header:
        return 0
    path.unlink(missing_ok=True)
    (path.parent / "hparams.yaml").unlink(missing_ok=True)  # written again by this job
    writer = logger.experiment  # creates the (now empty) log directory's writer
    fields = sorted(header)  # Lightning's column order, which its appends follow
    with open(path, "w", newline="") as fh:
        out = csv.DictWriter(fh, fieldnames=fields)
        out.writeheader()
        out.writerows(rows)
    writer.metrics_keys = fields
    return len(rows)


def logger_kwargs(node: Any, previous: dict[str, Any] | None) -> dict[str, Any]:
    """Extra arguments for a logger config node: the W&B run id to resume, if any."""
    target = str(node.get("_target_", "")) if hasattr(node, "get") else ""
    wid = wandb_id(previous)
    return {"id": wid} if wid and target.endswith("WandbLogger") else {}
