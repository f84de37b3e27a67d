"""How large a quantized network's activations are when it starts from a trained run.

    python -m abc_lab.training.scale_probe <run dir> [quantizer ...]

loads the run's best checkpoint (usually an fp run, the start of fine-tuning), converts the
model with each quantizer (``bnn``, ``bnn:fan_in`` for ``quant.bnn_scale=fan_in``, ``xnor``,
``abc:3:3``, …; default ``fp bnn bnn:fan_in xnor``), runs one batch of the run's test set in
training mode (batch statistics, as fine-tuning's first steps see them) and prints the
standard deviation of each stage's output and of the logits. An unscaled binary layer sums
fan_in terms of ±1, so its outputs are orders larger than the float network's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from omegaconf import OmegaConf

from ..models import BUILD_KEYS, build_model
from ..quant import parse_quant_spec, quantize_model
from ..quant.batch_statistics import batch_statistics

DEFAULT = ("fp", "bnn", "bnn:fan_in", "xnor")


def _run_state(run: Path) -> tuple[dict, dict, dict]:
    """(model spec, data config, model state) of a finished run directory (best checkpoint)."""
    from . import checkpoints as ckpts

    state = ckpts.model_state(ckpts.read_checkpoint(ckpts.run_checkpoint(run, "run"), "run"))
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=False)
    return {k: cfg["model"][k] for k in BUILD_KEYS}, cfg["data"], state


def _batch(data: dict, size: int) -> torch.Tensor:
    from hydra.utils import instantiate

    fields = {k: v for k, v in data.items() if k != "name"}
    dm = instantiate({**fields, "batch_size": size, "eval_batch_size": size, "num_workers": 0})
    dm.setup("test")
    return next(iter(dm.test_dataloader()))[0]


def stage_stds(model: torch.nn.Module, x: torch.Tensor) -> tuple[list[float], float]:
    """Standard deviation of every ``layer<i>`` stage's output and of the logits, one forward
    pass in training mode (no gradients; BatchNorm running statistics are left alone)."""
    stages = sorted(n for n, _ in model.named_children() if n.startswith("layer"))
    stds: dict[str, float] = {}
    hooks = [
        getattr(model, name).register_forward_hook(
            lambda _m, _i, out, name=name: stds.__setitem__(name, float(out.std()))
        )
        for name in stages
    ]
    try:
        with torch.no_grad(), batch_statistics(model):
            logits = model(x)
    finally:
        for h in hooks:
            h.remove()
    return [stds[s] for s in stages], float(logits.std())


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    run, quants = Path(argv[0]), argv[1:] or list(DEFAULT)
    spec, data, state = _run_state(run)
    x = _batch(data, 256)
    print(f"{spec['name']} from {run}, {len(x)} test images, training-mode statistics")
    print(f"{'quantizer':<14} {'stage output std':<28} logits std")
    for text in quants:
        quant = parse_quant_spec(text)
        torch.manual_seed(0)
        model = quantize_model(build_model(**spec), quant)
        model.load_state_dict(state, strict=False)  # quantizer parameters keep their init
        stages, logits = stage_stds(model, x)
        print(f"{quant.label():<14} {', '.join(f'{s:.2f}' for s in stages):<28} {logits:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
