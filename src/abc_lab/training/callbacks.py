"""Callbacks of our own (the rest come from Lightning, configured in conf/callbacks)."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """Saves ``last-step.ckpt`` every N training steps, beside the per-epoch ``last.ckpt``,
    so that a run killed mid-epoch resumes from at most N steps back."""

    CHECKPOINT_NAME_LAST = "last-step"


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of a run's last.ckpt / last-step.ckpt, if any."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
