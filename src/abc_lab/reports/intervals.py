"""95% confidence intervals of a gap (binary top-1 mean − fp top-1 mean, in points) over seeds.

Two t intervals, chosen by how the runs were made:

- paired: the binary row and the fp baseline have the same seeds, one run each (the
  studies start binary seed k from fp seed k), so the gap is the mean of the per-seed
  differences d_k and the interval is mean(d) ± t(0.975, n−1)·sd(d)/√n;
- Welch: otherwise, with at least two seeds on each side: the difference of the means ±
  t(0.975, ν)·√(s₁²/n₁ + s₂²/n₂), ν from the Welch–Satterthwaite equation.

With one seed on either side (and no pairing) there is no interval: nothing says how much
a run varies with its seed.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A ``LEVEL`` confidence interval in top-1 points; ``method`` "paired" or "welch"."""

    low: float
    high: float
    method: str
    n: int  # seeds (pairs for "paired", the smaller side for "welch")


def _t(df: float) -> float:
    return float(stats.t.ppf(0.5 + LEVEL / 2, df))


def _by_seed(values: Sequence[tuple[object, float]]) -> dict[str, float] | None:
    """Accuracy per seed, or None when a seed appears twice (no one-to-one pairing)."""
    out: dict[str, float] = {}
    for seed, value in values:
        if str(seed) in out:
            return None
        out[str(seed)] = value
    return out


def gap_interval(
    row: Sequence[tuple[object, float]], base: Sequence[tuple[object, float]]
) -> Interval | None:
    """The interval of the gap between ``row`` and ``base``, each ``(seed, top-1 fraction)``
    per run, or None where none can be given."""
    paired_row, paired_base = _by_seed(row), _by_seed(base)
    if (
        paired_row is not None
        and paired_base is not None
        and len(paired_row) >= 2
        and paired_row.keys() == paired_base.keys()
    ):
        d = [100.0 * (paired_row[s] - paired_base[s]) for s in paired_row]
        half = _t(len(d) - 1) * statistics.stdev(d) / math.sqrt(len(d))
        mean = statistics.fmean(d)
        return Interval(mean - half, mean + half, "paired", len(d))
    a = [100.0 * v for _, v in row]
    b = [100.0 * v for _, v in base]
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    gap = statistics.fmean(a) - statistics.fmean(b)
    if va + vb == 0.0:
        return Interval(gap, gap, "welch", min(len(a), len(b)))
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = _t(df) * math.sqrt(va + vb)
    return Interval(gap - half, gap + half, "welch", min(len(a), len(b)))


def describe(interval: Interval | None, digits: int = 2) -> str:
    """``[-1.20, -0.31]``, or ``—`` without an interval."""
    if interval is None:
        return "—"
    return f"[{interval.low:+.{digits}f}, {interval.high:+.{digits}f}]"
