"""`abc-lab init-check`: top-1 of binary configurations at an fp run's weights."""

from __future__ import annotations

import argparse

from ..console import make_console

HELP = "top-1 of binary configurations at an fp run's weights (what init_from gives)"


def main(argv: list[str]) -> int:
    """Validation top-1 of binary configurations at a full-precision run's weights, as loaded
    and after recalibrating BatchNorm statistics (the start that init_from gives)."""
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table

    from ..errors import UserError
    from ..initcheck import ACT_INITS, init_check

    p = argparse.ArgumentParser(prog="abc-lab init-check", description=main.__doc__)
    p.add_argument("source", help="fp run directory (its best checkpoint) or a .ckpt in one")
    p.add_argument(
        "--quant", nargs="+", default=["xnor", "abc:3:0", "abc:1:1", "abc:3:3", "abc:5:5"],
        help="fp, bnn, bwn, xnor or abc:M:N (default: %(default)s)",
    )  # fmt: skip
    p.add_argument(
        "--act-init",
        "--beta-init",
        nargs="+",
        default=["1/N", "lsq"],
        choices=list(ACT_INITS),
        help="how the ABC activation quantizers start: β = 1/N, β fitted to N(0, 1) (lsq), or "
        "fitted to each layer's inputs on the recalibration batches (fit-beta; fit-shifts: "
        "shifts and β; fit-shifts-bn: the same, its BatchNorm rescaled; quant.act_calibration) "
        "(default: %(default)s)",
    )
    p.add_argument("--images", type=int, default=5000, help="validation images evaluated")
    p.add_argument("--recal-batches", type=int, default=20, help="training batches for BN")
    args = p.parse_args(argv)
    console = make_console(emoji=False)  # "abc:M:N" is no emoji code
    try:
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task("quantize + evaluate", total=None)
            results = init_check(
                args.source, args.quant, args.act_init, args.images, args.recal_batches,
                progress=lambda done, total: prog.update(task, completed=done, total=total),
            )  # fmt: skip
    except UserError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    table = Table(
        title=f"top-1 % and loss at the fp weights of {args.source} ({args.images} val images)",
        caption=f"BN recal.: BatchNorm statistics recalibrated on {args.recal_batches} "
        "training batches",
    )
    cols = ("quantizer", "act. init", "top-1 as loaded", "loss", "top-1 BN recal.", "loss")
    for i, col in enumerate(cols):  # labels and figures never wrap; headers may
        table.add_column(col, justify="left" if i < 2 else "right", no_wrap=True)
    for r in results:
        table.add_row(
            r.label, r.act_init, f"{100 * r.top1_loaded:.2f}", f"{r.loss_loaded:.3f}",
            f"{100 * r.top1_recalibrated:.2f}", f"{r.loss_recalibrated:.3f}",
        )  # fmt: skip
    console.print(table)
    return 0
