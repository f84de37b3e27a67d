"""Fault injection for the reliability tests: with ``ABC_LAB_FAULT=<point>[:<n>]`` in its
environment a training job kills itself with SIGKILL the n-th time (default 1) it reaches
``<point>``, exactly as ``kill -9`` would. Without the variable nothing is installed.

Points: ``first_step`` (inside the first training step), ``mid_epoch`` (after training batch
n of an epoch), ``validation`` (inside validation batch n), ``checkpoint_write`` (half-way
through writing a checkpoint file), ``test`` (inside test batch n).
"""

from __future__ import annotations

import os
import signal

import lightning.pytorch as pl

ENV = "ABC_LAB_FAULT"
POINTS = ("first_step", "mid_epoch", "validation", "checkpoint_write", "test")


def planned() -> tuple[str, int] | None:
    """The (point, n) asked for in the environment, or None."""
    value = os.environ.get(ENV)
    if not value:
        return None
    point, _, n = value.partition(":")
    if point not in POINTS:
        raise ValueError(f"{ENV}={value}: the point must be one of {', '.join(POINTS)}")
    return point, int(n or 1)


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class FaultInjector(pl.Callback):
    """Kills the process at the planned point (see the module docstring)."""

    def __init__(self, point: str, n: int) -> None:
        self.point, self.n, self.seen = point, n, 0

    def _reach(self, point: str) -> None:
        if point == self.point:
            self.seen += 1
            if self.seen >= self.n:
                die()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == 0 and batch_idx == 0:
            self._reach("first_step")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._reach("mid_epoch")

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._reach("validation")

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self._reach("test")


def fault_callbacks() -> list[pl.Callback]:
    plan = planned()
    return [FaultInjector(*plan)] if plan and plan[0] != "checkpoint_write" else []


def checkpoint_write_fault() -> int | None:
    """The n-th checkpoint write to die in, when that is planned."""
    plan = planned()
    return plan[1] if plan and plan[0] == "checkpoint_write" else None
