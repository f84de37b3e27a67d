"""A data module of abc_lab.data seen by Lightning as a LightningDataModule."""

from __future__ import annotations

from typing import Any

import lightning.pytorch as pl


class LightningData(pl.LightningDataModule):
    """Delegates setup and the three loaders to a plain data module."""

    def __init__(self, data: Any) -> None:
        super().__init__()
        self.data = data

    def setup(self, stage: str | None = None) -> None:
        self.data.setup(stage)

    def resume_at(self, epoch: int, batches: int) -> None:
        """Continue ``epoch``'s training order after ``batches`` batches (see DataOrder)."""
        self.data.resume_at(epoch, batches)

    def train_dataloader(self):
        return self.data.train_dataloader()

    def val_dataloader(self):
        return self.data.val_dataloader()

    def test_dataloader(self):
        return self.data.test_dataloader()
