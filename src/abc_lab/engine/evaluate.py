"""Top-1 of a packed model with the bitwise engine, checked image by image against the
simulation of the same file: the reference arithmetic in float, which training's test
evaluation computes and the engine reproduces to the bit."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from .runtime import EngineModel

REL_TOL = 1e-4


@dataclass
class Disagreement:
    """An image on which the engine and the simulation differ (class, or logits > REL_TOL)."""

    index: int
    label: int
    engine: list[float]
    simulated: list[float]
    rel_diff: float


@dataclass
class EvalResult:
    images: int
    top1_engine: float
    top1_simulated: float
    max_rel_diff: float
    class_disagreements: int
    disagreements: list[Disagreement] = field(default_factory=list)
    engine_s: float = 0.0
    simulated_s: float = 0.0


@torch.no_grad()
def evaluate(
    engine: EngineModel,
    simulated: EngineModel,
    batches: Iterable[tuple[Tensor, Tensor]],
    limit: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> EvalResult:
    """Run both models over ``batches``; top-1 of each and every image where they differ."""
    seen = correct_e = correct_s = class_diff = 0
    worst = 0.0
    t_e = t_s = 0.0
    bad: list[Disagreement] = []
    for x, y in batches:
        if limit is not None:
            x, y = x[: limit - seen], y[: limit - seen]
        t0 = time.perf_counter()
        le = engine(x)
        t1 = time.perf_counter()
        ls = simulated(x)
        t_s += time.perf_counter() - t1
        t_e += t1 - t0
        pe, ps = le.argmax(1), ls.argmax(1)
        correct_e += int((pe == y).sum())
        correct_s += int((ps == y).sum())
        rel = (le - ls).abs().amax(1) / ls.abs().amax(1).clamp_min(1e-12)
        worst = max(worst, float(rel.max()))
        class_diff += int((pe != ps).sum())
        for i in torch.nonzero((pe != ps) | (rel > REL_TOL)).flatten().tolist():
            bad.append(
                Disagreement(seen + i, int(y[i]), le[i].tolist(), ls[i].tolist(), float(rel[i]))
            )
        seen += len(y)
        if progress is not None:
            progress(seen)
        if limit is not None and seen >= limit:
            break
    n = max(seen, 1)
    return EvalResult(seen, correct_e / n, correct_s / n, worst, class_diff, bad, t_e, t_s)
