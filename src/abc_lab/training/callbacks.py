"""Callbacks of our own (the rest come from Lightning, configured in conf/callbacks)."""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint


class StepCheckpoint(ModelCheckpoint):
    """Saves ``last-step.ckpt`` every N training steps, beside the per-epoch ``last.ckpt``,
    so that a run killed mid-epoch resumes from at most N steps back.

    The last batch of an epoch that ends with validation is never saved here: a checkpoint
    taken there holds the epoch's training but not its validation, and Lightning, resuming
    from it, would go straight to the next epoch, leaving that epoch out of the run's
    history. The per-epoch ``last.ckpt``, written after validation, covers that point; a kill
    during validation resumes from the step checkpoint before it and validates again.
    """

    CHECKPOINT_NAME_LAST = "last-step"

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        last_batch = batch_idx + 1 >= trainer.num_training_batches
        every = trainer.check_val_every_n_epoch
        validates = trainer.enable_validation and (
            every is None or (trainer.current_epoch + 1) % every == 0
        )
        if last_batch and validates:
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)


class DataOrder(pl.Callback):
    """Keeps in every checkpoint how far training is into its epoch's sample order, and when
    a run resumes from a checkpoint taken mid-epoch, has the data module continue that order
    (``resume_at``) instead of starting a new one: each sample is still seen once per epoch,
    as in a run that was never interrupted."""

    def __init__(self) -> None:
        self.epoch, self.batches = 0, 0
        self._restored: tuple[int, int] | None = None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.epoch, self.batches = trainer.current_epoch, 0

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.batches = batch_idx + 1  # batch_idx continues across a resume

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batches": self.batches}

    def load_state_dict(self, state_dict: dict) -> None:
        self.epoch, self.batches = int(state_dict["epoch"]), int(state_dict["batches"])
        self._restored = (self.epoch, self.batches)

    def on_fit_start(self, trainer, pl_module) -> None:
        resume_at = getattr(trainer.datamodule, "resume_at", None)
        if self._restored is not None and self._restored[1] > 0 and resume_at is not None:
            resume_at(*self._restored)  # an epoch already finished: its next one starts fresh
        self._restored = None


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of a run's last.ckpt / last-step.ckpt, if any."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
