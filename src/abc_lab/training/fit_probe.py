"""How well a finished run fits the images it trained on, against images it never saw.

    python -m abc_lab.training.fit_probe <run dir> [--reestimate-bn] [--window]

loads the run's best checkpoint as it was trained and prints its top-1 on its training
images (eval mode, no augmentation), its validation images and the test set. A network whose
training top-1 is barely above its validation top-1 cannot fit its training set: what holds
it back is what it can represent or what its optimizer finds, not how it generalises.

``--reestimate-bn`` prints the three again after every BatchNorm's running statistics are
recomputed as a plain mean over one pass of the training images (no augmentation): whether
noisy running statistics cost accuracy. ``--window`` prints, for each sign activation (bnn,
xnor), the share of its inputs inside the |x| ≤ 1 window through which the straight-through
estimator passes gradients, on one training batch in training mode.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

import torch
from torch import nn

from ..initcheck import evaluate, recalibrate_bn
from ..quant.batch_statistics import batch_statistics
from ..quant.layers import QuantConv2d, QuantLinear
from ..quant.quantizers import SignInput

SPLITS = ("train", "val", "test")


def sign_window_shares(model: nn.Module, x: torch.Tensor) -> dict[str, float]:
    """For each layer with sign activations, the share of its inputs inside |x| ≤ 1 in one
    training-mode forward pass of ``x`` (BatchNorm running statistics left as they are)."""
    shares: dict[str, float] = {}
    layers = [
        (name, m)
        for name, m in model.named_modules()
        if isinstance(m, QuantConv2d | QuantLinear) and isinstance(m.input_quantizer, SignInput)
    ]

    def record(name: str):
        return lambda _m, args: shares.__setitem__(name, float((args[0].abs() <= 1).float().mean()))

    # a pre-hook also makes the layer take its BatchNorm and binarisation as separate calls
    hooks = [m.register_forward_pre_hook(record(name)) for name, m in layers]
    try:
        with torch.no_grad(), batch_statistics(model):
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return shares


def _loaders(data: dict) -> dict[str, Iterable]:
    from hydra.utils import instantiate

    fields = {k: v for k, v in data.items() if k != "name"}
    dm = instantiate(
        {**fields, "batch_size": 500, "eval_batch_size": 500, "num_workers": 0, "augment": False}
    )
    dm.setup("fit")
    dm.setup("test")
    return {
        "train": dm.train_dataloader(),
        "val": dm.val_dataloader(),
        "test": dm.test_dataloader(),
    }


def main(argv: list[str]) -> int:
    from ..errors import UserError
    from .checkpoints import trained_model

    p = argparse.ArgumentParser(prog="python -m abc_lab.training.fit_probe", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    p.add_argument("run", help="a finished run directory (its best checkpoint) or a .ckpt in one")
    p.add_argument("--reestimate-bn", action="store_true", help="again with BN re-estimated")
    p.add_argument("--window", action="store_true", help="sign inputs inside the STE window")
    args = p.parse_args(argv)
    torch.manual_seed(0)  # the training loader's order: the same figures on every rerun
    try:
        model, cfg, checkpoint = trained_model(args.run, "run")
        loaders = _loaders(cfg["data"])
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"{cfg['model']['name']} · {cfg['quant']['name']} from {checkpoint}")
    print(f"{'top-1 %':<16} " + "  ".join(f"{s:>6}" for s in SPLITS))

    def row(label: str) -> None:
        top1 = {s: 100 * evaluate(model, loaders[s], len(loaders[s].dataset))[0] for s in SPLITS}
        print(f"{label:<16} " + "  ".join(f"{top1[s]:6.2f}" for s in SPLITS))

    row("trained")
    if args.reestimate_bn:
        recalibrate_bn(model, loaders["train"], len(loaders["train"]))
        row("BN re-estimated")
    if args.window:
        x, _ = next(iter(loaders["train"]))
        shares = sign_window_shares(model, x)
        for name, share in shares.items():
            print(f"{name:<24} {share:.2f} of sign inputs inside |x| <= 1")
        if shares:
            print(f"mean over {len(shares)} layers: {sum(shares.values()) / len(shares):.2f}")
        else:
            print("no sign activations (the window applies to bnn and xnor)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
