"""Hydra callback that summarises a multirun (`abc-lab train -m ...`) when it ends.

Registered in ``conf/hydra/default.yaml``; works with every launcher (basic, joblib,
submitit) because it reads what the jobs leave on disk: each job's ``results.json`` and
``.hydra/overrides.yaml``. Errors of jobs that ran in this process are added from Hydra's
``JobReturn``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from .job_summary import find_job_dirs, job_row, summarize


def _sweep_dir(config: DictConfig) -> Path | None:
    try:
        return Path(str(config.hydra.sweep.dir))
    except Exception:
        return None


class MultirunSummary(Callback):
    """Writes ``summary.json`` + ``summary.md`` into the sweep dir, prints the table and
    builds the comparison report into ``<sweep dir>/report``."""

    def __init__(self) -> None:
        self._sweep_dir: Path | None = None
        self._errors: dict[str, str] = {}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._sweep_dir = _sweep_dir(config)

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        """Remember the exception of a job that raised (only seen for in-process launchers)."""
        try:
            from hydra.core.utils import JobStatus

            if job_return.status != JobStatus.FAILED:
                return
            out = Path(str(job_return.hydra_cfg.hydra.runtime.output_dir)).resolve()
            exc = job_return._return_value
            self._errors[str(out)] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        except Exception:
            return

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = self._sweep_dir
        end_dir = _sweep_dir(config)
        if sweep_dir is None or (not sweep_dir.is_dir() and end_dir is not None):
            sweep_dir = end_dir
        if sweep_dir is None or not sweep_dir.is_dir():
            return
        rows = []
        for job in find_job_dirs(sweep_dir):
            error = self._errors.get(str(job.resolve()))
            row = job_row(job, error=error)
            if error and row.status == "running":  # died without closing its record
                row.status = "failed"
            rows.append(row)
        summarize(sweep_dir, rows, title=f"multirun {sweep_dir}", extra={"kind": "multirun"})
        failed = [r for r in rows if r.status != "finished"]
        if failed:  # after the summary: the exit code tells scripts that not all succeeded
            print(f"{len(failed)} of {len(rows)} jobs did not finish; see {sweep_dir}")
            sys.exit(1)
