"""Callbacks of our own (the rest come from Lightning, configured in conf/callbacks)."""

from __future__ import annotations

from pathlib import Path

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


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The most recently written of a run's last.ckpt / last-step.ckpt, if any."""
    found = [p for p in (Path(run_dir) / "checkpoints").glob("last*.ckpt") if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None
