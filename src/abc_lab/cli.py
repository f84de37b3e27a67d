"""The `abc-lab` command: train | sweep | report | bench | init-check | models.

`abc-lab train` hands its arguments to Hydra unchanged (overrides, -m, --help, --cfg);
the other subcommands are small argparse front-ends over library functions.
"""

from __future__ import annotations

import argparse
import sys

USAGE = """usage: abc-lab <command> [args]

commands:
  train    train one model (Hydra overrides, e.g. model=resnet34 quant.M=5; -m for multirun)
  sweep    run a W&B sweep definition, online or offline (abc-lab sweep sweeps/bases.yaml)
  report   compare runs with their full-precision baselines (abc-lab report outputs/...)
  bench    time training steps of fp and ABC configurations side by side
  init-check  top-1 of binary configurations at an fp run's weights (what init_from gives)
  models   list models and quantizers
  bench-startup  time the quick answers (--help, --cfg job, rejected input) as fresh processes

`abc-lab <command> --help` explains each."""


def _bench(argv: list[str]) -> int:
    """Time training steps of fp and ABC configurations side by side (ratios to fp)."""
    from rich.progress import Progress
    from rich.table import Table

    from .bench import default_cases, run_benchmark
    from .console import make_console

    p = argparse.ArgumentParser(prog="abc-lab bench", description=_bench.__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--reference-rounds", type=int, default=3, help="timed steps of M·N paths")
    p.add_argument("--no-reference", action="store_true", help="skip the slow M·N paths")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    console = make_console()
    cases = default_cases(reference=[] if args.no_reference else None)
    console.print(
        f"[bold]Training step[/]: {args.model}, {args.in_channels}x{args.input_size}x"
        f"{args.input_size}, batch {args.batch_size}, {args.device}, "
        f"{args.rounds} interleaved rounds"
    )
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("timing", total=args.rounds)
        results = run_benchmark(
            cases, args.model, args.input_size, args.in_channels, args.batch_size, args.rounds,
            reference_rounds=args.reference_rounds, device=args.device,
            progress=lambda done, total: prog.update(task, completed=done),
        )  # fmt: skip
    table = Table(title="training step time (median), ratio to fp measured in this run")
    for col in ("configuration", "median step (ms)", "× fp", "steps timed"):
        table.add_column(col, justify="left" if col == "configuration" else "right")
    for r in results:
        table.add_row(r.label, f"{1000 * r.median_s:.1f}", f"{r.ratio:.2f}", str(r.steps))
    console.print(table)
    return 0


def _init_check(argv: list[str]) -> int:
    """Validation top-1 of binary configurations at a full-precision run's weights, as loaded
    and after recalibrating BatchNorm statistics (the start that init_from gives)."""
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table

    from .console import make_console
    from .initcheck import BETA_INITS, init_check
    from .training.errors import UserError

    p = argparse.ArgumentParser(prog="abc-lab init-check", description=_init_check.__doc__)
    p.add_argument("source", help="fp run directory (its best checkpoint) or a .ckpt in one")
    p.add_argument(
        "--quant", nargs="+", default=["xnor", "abc:3:0", "abc:1:1", "abc:3:3", "abc:5:5"],
        help="fp, bnn, bwn, xnor or abc:M:N (default: %(default)s)",
    )  # fmt: skip
    p.add_argument("--beta-init", nargs="+", default=list(BETA_INITS), choices=list(BETA_INITS))
    p.add_argument("--images", type=int, default=5000, help="validation images evaluated")
    p.add_argument("--recal-batches", type=int, default=20, help="training batches for BN")
    args = p.parse_args(argv)
    console = make_console(emoji=False)  # "abc:M:N" is no emoji code
    try:
        with Progress(console=console, transient=True) as prog:
            task = prog.add_task("quantize + evaluate", total=None)
            results = init_check(
                args.source, args.quant, args.beta_init, args.images, args.recal_batches,
                progress=lambda done, total: prog.update(task, completed=done, total=total),
            )  # fmt: skip
    except UserError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    table = Table(
        title=f"top-1 % and loss at the fp weights of {args.source} ({args.images} val images)"
    )
    recal = f"BN recalibrated ({args.recal_batches} b.)"
    cols = ("quantizer", "β init", "as loaded: top-1", "loss", f"{recal}: top-1", "loss")
    for col in cols:
        table.add_column(col, justify="left" if col in ("quantizer", "β init") else "right")
    for r in results:
        table.add_row(
            r.label, r.beta_init, f"{100 * r.top1_loaded:.2f}", f"{r.loss_loaded:.3f}",
            f"{100 * r.top1_recalibrated:.2f}", f"{r.loss_recalibrated:.3f}",
        )  # fmt: skip
    console.print(table)
    return 0


def _models(argv: list[str]) -> int:
    from .console import make_console
    from .models import list_models
    from .quant import list_quantizers

    make_console().print(
        f"models: {', '.join(list_models())}\nquantizers: {', '.join(list_quantizers())}"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    if command == "train":
        from .training.entry import run_hydra

        return run_hydra(rest)
    if command == "sweep":
        from .sweeps.cli import main as sweep_main

        return sweep_main(rest)
    if command == "report":
        from .reports.cli import main as report_main

        return report_main(rest)
    if command == "bench":
        return _bench(rest)
    if command == "init-check":
        return _init_check(rest)
    if command == "models":
        return _models(rest)
    if command == "bench-startup":
        from .startup_bench import main as startup_main

        return startup_main(rest)
    print(f"abc-lab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
