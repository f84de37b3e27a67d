"""The ABC-Net paper's ResNet-18 ImageNet results, as data (Lin et al., NeurIPS 2017).

Reports put these next to our own runs so the reader sees whether the same pattern holds:
every added base helps, activation bases matter more than weight bases, and (5,5) ends a
few points under full precision. Numbers are top-1 / top-5 accuracy in percent.
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCE = (
    'X. Lin, C. Zhao, W. Pan, "Towards Accurate Binary Convolutional Neural Network", '
    "NeurIPS 2017 (arXiv:1711.11294), ResNet-18 on ImageNet"
)


@dataclass(frozen=True)
class PaperResult:
    """One row of the paper's ResNet-18 ImageNet results; ``top5`` None where not given."""

    label: str
    quant: str
    M: int | None
    N: int | None  # 0: float activations (weight-only rows)
    top1: float
    top5: float | None

    @property
    def gap(self) -> float:
        """Top-1 gap to the paper's full-precision ResNet-18, in points."""
        return self.top1 - FULL_PRECISION.top1


XNOR = "xnor"  # the paper's XNOR-Net rows; ours compare by the same quantizer name
FULL_PRECISION = PaperResult("fp", "fp", None, None, 69.3, 89.2)

_ABC_GRID = {
    (1, 1): (42.7, 67.6),
    (3, 1): (49.1, 73.8),
    (3, 3): (61.0, 83.2),
    (3, 5): (63.1, 84.8),
    (5, 1): (54.1, 78.1),
    (5, 3): (62.5, 84.2),
    (5, 5): (65.0, 85.9),
}
_WEIGHT_ONLY = {1: 62.8, 2: 63.7, 3: 66.2, 5: 68.3}

RESULTS: tuple[PaperResult, ...] = (
    FULL_PRECISION,
    PaperResult("bwn", "bwn", None, None, 60.8, 83.0),
    PaperResult("xnor", "xnor", None, None, 51.2, 73.2),
    *(PaperResult(f"abc({m},w)", "abc", m, 0, t1, None) for m, t1 in _WEIGHT_ONLY.items()),
    *(PaperResult(f"abc({m},{n})", "abc", m, n, t1, t5) for (m, n), (t1, t5) in _ABC_GRID.items()),
)

# Other depths quoted in the paper: (5,5) top-1 against full precision.
DEEPER = (("resnet34", 68.4, 73.3), ("resnet50", 70.1, 76.1))


def by_label() -> dict[str, PaperResult]:
    """Paper results keyed by run-record label: ``fp``, ``xnor``, ``abc(3,3)``, ``abc(3,w)``."""
    return {r.label: r for r in RESULTS}


def grid() -> dict[tuple[int, int], PaperResult]:
    """The ABC (M, N) results with binary activations, keyed by (M, N)."""
    return {(r.M, r.N): r for r in RESULTS if r.quant == "abc" and r.N}
