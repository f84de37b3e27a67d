"""`abc-lab train [overrides]`: one training job, or a multirun with -m (Hydra semantics)."""

from __future__ import annotations

HELP = "train one model (Hydra overrides, e.g. model=resnet34 quant.M=5; -m for multirun)"


def main(argv: list[str]) -> int:
    """Hand the arguments to Hydra unchanged (overrides, -m, --help, --cfg)."""
    from ..training.entry import run_hydra

    return run_hydra(argv)
