"""The training order: a fresh shuffle each epoch, drawn from (seed, epoch) alone.

Because the permutation of an epoch can be drawn again at any time, a run resumed in the
middle of an epoch continues that epoch's order where it stopped (``resume_at``): every
sample is seen once per epoch, as in a run never interrupted.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class EpochShuffle(Sampler[int]):
    """Indices 0..size-1 in the order of ``randperm`` seeded by (seed, epoch).

    ``set_epoch`` (Lightning calls it before each epoch) picks the epoch; without it each
    pass takes the next epoch. ``resume_at(epoch, done)`` makes the next pass that epoch's
    order without its first ``done`` indices.
    """

    def __init__(self, size: int, seed: int) -> None:
        self.size, self.seed = int(size), int(seed)
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        if epoch != self.epoch:
            self._skip = 0  # a resume point belongs to its own epoch only
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, done: int) -> None:
        self.epoch, self._skip = int(epoch), max(0, min(int(done), self.size))

    def order(self, epoch: int) -> list[int]:
        """The full permutation of ``epoch``."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(self.size, generator=generator).tolist()

    def __iter__(self) -> Iterator[int]:
        epoch, skip = self.epoch, self._skip
        self.epoch, self._skip = epoch + 1, 0  # the next pass, unless set_epoch says otherwise
        yield from self.order(epoch)[skip:]

    def __len__(self) -> int:
        return self.size
