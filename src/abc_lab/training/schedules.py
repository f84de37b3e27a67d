"""Learning-rate schedules, stepped every optimizer step, each with an optional linear warmup.

Each builder takes the optimizer, the total number of steps and steps per epoch (filled
in by the LightningModule) plus its own settings from ``conf/schedule/*.yaml``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def _with_warmup(
    optimizer: Optimizer, factor: Callable[[int], float], warmup_steps: int
) -> LambdaLR:
    def lr_lambda(step: int) -> float:
        if warmup_steps > 0 and step < warmup_steps:
            return (step + 1) / warmup_steps
        return factor(step - warmup_steps)

    return LambdaLR(optimizer, lr_lambda)


def _warmup_steps(warmup_epochs: float, steps_per_epoch: int, total_steps: int) -> int:
    if warmup_epochs < 0:
        raise ValueError(f"schedule.warmup_epochs must be >= 0, got {warmup_epochs}")
    return min(int(round(warmup_epochs * steps_per_epoch)), max(total_steps - 1, 0))


def cosine(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    min_lr_ratio: float = 0.0,
) -> LambdaLR:
    """Cosine decay to lr * min_lr_ratio at the last step."""
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    span = max(total_steps - warm, 1)

    def factor(step: int) -> float:
        progress = min(step / span, 1.0)
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return _with_warmup(optimizer, factor, warm)


def step(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    milestones: Sequence[float] = (0.5, 0.75),
    gamma: float = 0.1,
) -> LambdaLR:
    """Multiply lr by gamma at each milestone (fractions of training in (0, 1))."""
    if any(not 0 < m < 1 for m in milestones):
        raise ValueError(f"schedule.milestones must be fractions in (0, 1), got {list(milestones)}")
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    points = sorted(int(m * total_steps) for m in milestones)

    def factor(s: int) -> float:
        return gamma ** sum(s + warm >= p for p in points)

    return _with_warmup(optimizer, factor, warm)


def onecycle(
    optimizer: Optimizer,
    total_steps: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0,
    pct_start: float = 0.3,
    div_factor: float = 25.0,
    final_div_factor: float = 1e4,
) -> LambdaLR:
    """One-cycle (cosine): lr/div_factor -> lr over pct_start, then down to lr/div/final_div."""
    up = max(int(pct_start * total_steps), 1)
    start, end = 1 / div_factor, 1 / (div_factor * final_div_factor)

    def factor(s: int) -> float:
        if s < up:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * s / up))
        progress = min((s - up) / max(total_steps - up, 1), 1.0)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * progress))

    return _with_warmup(
        optimizer, factor, _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    )


def constant(
    optimizer: Optimizer, total_steps: int, steps_per_epoch: int, warmup_epochs: float = 0
) -> LambdaLR:
    """Constant lr after an optional warmup."""
    warm = _warmup_steps(warmup_epochs, steps_per_epoch, total_steps)
    return _with_warmup(optimizer, lambda s: 1.0, warm)
