"""Run-directory housekeeping that needs no torch (used before the heavy imports)."""

from __future__ import annotations

import shutil
from pathlib import Path


def discard_run_dir(run_dir: Path) -> None:
    """Remove a run directory that holds no result (only Hydra's own files), if it is one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    leftovers = {p.name for p in run_dir.iterdir()} - {".hydra", "train.log"}
    if not leftovers:
        shutil.rmtree(run_dir, ignore_errors=True)
