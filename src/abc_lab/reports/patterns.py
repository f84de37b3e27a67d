"""The paper's pattern, checked on our rows within the seed-to-seed noise we measured.

Claims of the ABC-Net paper's ResNet-18 table, each tested where our runs hold both sides:
- one more weight base never loses accuracy (same N, next larger M);
- one more activation base never loses accuracy (same M, next larger N);
- activation bases help more than weight bases (mean gain per added base);
- abc(1,1) reaches at least xnor's accuracy.

Noise: the pooled sample standard deviation of top-1 over the rows trained with several
seeds. A claim "A ≥ B" holds when mean(A) − mean(B) ≥ −2·noise; with no multi-seed row the
tolerance is 0 and the table says so.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from . import paper
from .document import Table
from .grouping import Row

TOLERANCE_SIGMAS = 2.0


@dataclass(frozen=True)
class Check:
    claim: str
    comparison: str
    delta: float  # points; >= -tolerance means the claim holds
    paper_delta: float | None

    def holds(self, tolerance: float) -> bool:
        return self.delta >= -tolerance


def seed_noise(rows: Sequence[Row]) -> tuple[float | None, list[str]]:
    """Pooled sample std of top-1 (points) over rows with >= 2 seeds, and those rows' labels."""
    variances, labels = [], []
    for row in rows:
        if row.top1 is not None and row.top1.std is not None:
            variances.append((100 * row.top1.std) ** 2)
            labels.append(row.base_label)
    return (math.sqrt(statistics.fmean(variances)) if variances else None), labels


def _top1(row: Row) -> float:
    return 100 * row.top1.mean  # type: ignore[union-attr]


def _paper(m: int, n: int) -> float | None:
    found = paper.grid().get((m, n))
    return found.top1 if found else None


def _paper_delta(a: tuple[int, int], b: tuple[int, int]) -> float | None:
    pa, pb = _paper(*a), _paper(*b)
    return pa - pb if pa is not None and pb is not None else None


def _steps(cells: dict[tuple[int, int], Row], axis: int) -> list[tuple[tuple, tuple]]:
    """Pairs (smaller, next larger) along M (axis 0) or N (axis 1), the other count fixed."""
    pairs = []
    for cell in sorted(cells):
        larger = sorted(c for c in cells if c[1 - axis] == cell[1 - axis] and c[axis] > cell[axis])
        if larger:
            pairs.append((cell, larger[0]))
    return pairs


def checks(abc_rows: Sequence[Row], xnor: Row | None) -> list[Check]:
    """Every claim our rows can test (rows without an accuracy are ignored)."""
    cells = {
        (r.M, r.N): r
        for r in abc_rows
        if r.top1 is not None and r.M is not None and r.N  # N=0 is float activations
    }
    out: list[Check] = []
    gains: dict[str, list[tuple[float, float | None]]] = {"weight": [], "activation": []}
    for axis, kind in ((0, "weight"), (1, "activation")):
        for small, large in _steps(cells, axis):
            delta = _top1(cells[large]) - _top1(cells[small])
            p = _paper_delta(large, small)
            added = large[axis] - small[axis]
            gains[kind].append((delta / added, None if p is None else p / added))
            out.append(
                Check(
                    f"more {kind} bases never lose",
                    f"abc{large} − abc{small}".replace(" ", ""),
                    delta,
                    p,
                )
            )
    if gains["weight"] and gains["activation"]:
        act = statistics.fmean(g for g, _ in gains["activation"])
        wgt = statistics.fmean(g for g, _ in gains["weight"])
        paper_all = [p for _, p in gains["activation"] + gains["weight"]]
        paper_delta = None
        if all(p is not None for p in paper_all):
            paper_delta = statistics.fmean(p for _, p in gains["activation"]) - statistics.fmean(
                p for _, p in gains["weight"]
            )
        out.append(
            Check(
                "activation bases help more than weight bases",
                f"mean gain per activation base ({act:+.2f}) − per weight base ({wgt:+.2f})",
                act - wgt,
                paper_delta,
            )
        )
    if xnor is not None and xnor.top1 is not None and (1, 1) in cells:
        p = _paper(1, 1)
        out.append(
            Check(
                "abc(1,1) at least at xnor's level",
                "abc(1,1) − xnor",
                _top1(cells[(1, 1)]) - _top1(xnor),
                None if p is None else p - paper.by_label()["xnor"].top1,
            )
        )
    return out


def pattern_table(rows: Sequence[Row], abc_rows: Sequence[Row], xnor: Row | None) -> Table | None:
    """The checks as a report table, or None when no claim can be tested."""
    found = checks(abc_rows, xnor)
    if not found:
        return None
    noise, noisy = seed_noise(rows)
    tolerance = TOLERANCE_SIGMAS * noise if noise is not None else 0.0
    body = [
        [
            c.claim,
            c.comparison,
            f"{c.delta:+.2f}",
            "—" if c.paper_delta is None else f"{c.paper_delta:+.2f}",
            "yes" if c.holds(tolerance) else "**no**",
        ]
        for c in found
    ]
    if noise is None:
        rule = "No configuration ran with several seeds, so the tolerance is 0."
    else:
        rule = (
            f"Seed noise: pooled std of top-1 over {', '.join(noisy)} = {noise:.2f} points; "
            f"a claim holds when Δ ≥ −{TOLERANCE_SIGMAS:g}·noise = −{tolerance:.2f}."
        )
    return Table(
        ["claim", "comparison", "Δ top-1 (pts)", "paper Δ", "holds"],
        body,
        ["left", "left", "right", "right", "left"],
        caption="The paper's pattern on our runs (ABC rows with binary activations). " + rule,
    )
