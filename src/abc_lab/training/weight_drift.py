"""How far fine-tuning moved the latent binary weights away from the run it started from.

    python -m abc_lab.training.weight_drift <run dir> [<run dir> ...]

For each finished run started from another one (``init_from``), compares the latent weights
of its binarised layers in its best checkpoint with the same weights in the checkpoint it
started from, and prints, over all those layers together: the fraction of weights whose sign
about the layer mean changed (sign(W - mean W): xnor's and bnn's base up to the mean, ABC's
middle base for odd M), and the median of |W - W₀| in units of the start layer's standard
deviation. A binary weight only changes when its latent value crosses a threshold, so these
two numbers say how much of the binary network the fine-tuning could rewrite.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..models import BUILD_KEYS, build_model
from ..quant import quantize_model
from ..quant.layers import _QuantMixin


@dataclass(frozen=True)
class Drift:
    layers: int
    weights: int
    flipped: float  # fraction of weights whose sign about the layer mean changed
    median_move: float  # median |W - W0| / std(W0)


def binarised_layers(model: torch.nn.Module) -> list[str]:
    """Names of the layers of ``model`` whose weights are binarised."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, _QuantMixin) and m.kernel_quantizer is not None
    ]


def drift(start: dict[str, torch.Tensor], end: dict[str, torch.Tensor], layers: list[str]) -> Drift:
    """Sign changes about the mean and median move of the weights of ``layers`` (names of
    modules; their ``<name>.weight`` in both states) from ``start`` to ``end``."""
    if not layers:
        raise ValueError("no binarised layers to compare")
    flips, moves, total = 0, [], 0
    for name in layers:
        w0, w1 = start[f"{name}.weight"].double(), end[f"{name}.weight"].double()
        if w0.shape != w1.shape:
            raise ValueError(f"{name}.weight: shape {tuple(w1.shape)} against {tuple(w0.shape)}")
        s0, s1 = torch.sign(w0 - w0.mean()), torch.sign(w1 - w1.mean())
        flips += int((s0 != s1).sum())
        moves.append(((w1 - w0).abs() / w0.std()).flatten())
        total += w0.numel()
    return Drift(len(layers), total, flips / total, float(torch.cat(moves).median()))


def run_drift(run: Path) -> Drift:
    """The drift of a finished run directory started from another run."""
    from . import checkpoints as ckpts

    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=False)
    source = cfg.get("init_from")
    if not source:
        raise ValueError(f"{run} did not start from another run (init_from is empty)")
    start = ckpts.model_state(
        ckpts.read_checkpoint(ckpts.run_checkpoint(source, "init_from"), "init_from")
    )
    end = ckpts.model_state(ckpts.read_checkpoint(ckpts.run_checkpoint(run, "run"), "run"))
    model = quantize_model(build_model(**{k: cfg["model"][k] for k in BUILD_KEYS}), cfg["quant"])
    return drift(start, end, binarised_layers(model))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    print(f"{'run':<60} {'layers':>6} {'weights':>8} {'flipped':>8} {'median |ΔW|/std':>16}")
    for arg in argv:
        try:
            d = run_drift(Path(arg))
        except (ValueError, OSError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        print(f"{arg:<60} {d.layers:>6} {d.weights:>8} {d.flipped:>8.2%} {d.median_move:>16.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
