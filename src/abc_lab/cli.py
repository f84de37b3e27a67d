"""The `abc-lab` command: train | sweep | report | bench | init-check | models.

`abc-lab train` hands its arguments to Hydra unchanged (overrides, -m, --help, --cfg);
the other subcommands are small argparse front-ends over library functions.
"""

from __future__ import annotations

import argparse
import sys

from rich.console import Console

USAGE = """usage: abc-lab <command> [args]

commands:
  train    train one model (Hydra overrides, e.g. model=resnet34 quant.M=5; -m for multirun)
  sweep    run a W&B sweep definition, online or offline (abc-lab sweep sweeps/bases.yaml)
  report   compare runs with their full-precision baselines (abc-lab report outputs/...)
  bench    time training steps of fp and ABC configurations side by side
  init-check  top-1 of binary configurations at an fp run's weights (what init_from gives)
  models   list models and quantizers

`abc-lab <command> --help` explains each."""


def _bench(argv: list[str]) -> int:
    """Time training steps of fp, ABC and baseline configurations side by side (ratios to
    fp), and count the operators PyTorch's profiler records in one step of each."""
    import platform

    import torch
    from rich.progress import Progress
    from rich.table import Table

    from .bench import count_ops, default_cases, run_benchmark

    p = argparse.ArgumentParser(prog="abc-lab bench", description=_bench.__doc__)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--input-size", type=int, default=28)
    p.add_argument("--in-channels", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--rounds", type=int, default=10, help="timed steps per configuration")
    p.add_argument("--reference-rounds", type=int, default=3, help="timed steps of M·N paths")
    p.add_argument("--no-reference", action="store_true", help="skip the slow M·N paths")
    p.add_argument("--no-baselines", action="store_true", help="skip xnor, bnn and bwn")
    p.add_argument(
        "--compile", action="store_true",
        help="also fp and abc(3,3) as whole compiled models (torch.compile; CUDA graphs on a "
        "GPU); compiling takes minutes on a small CPU",
    )  # fmt: skip
    p.add_argument("--no-ops", action="store_true", help="skip the profiler's operator count")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    console = Console()
    cases = default_cases(
        reference=[] if args.no_reference else None,
        baselines=not args.no_baselines,
        compile_model=args.compile,
    )
    if args.device.startswith("cuda"):
        machine = torch.cuda.get_device_name(args.device)
    else:
        machine = f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    console.print(
        f"[bold]Training step[/]: {args.model}, {args.in_channels}x{args.input_size}x"
        f"{args.input_size}, batch {args.batch_size}, {args.device} ({machine}), torch "
        f"{torch.__version__}, {args.rounds} interleaved rounds"
    )
    shape = (args.model, args.input_size, args.in_channels, args.batch_size)
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("timing", total=args.rounds)
        results = run_benchmark(
            cases, *shape, args.rounds, reference_rounds=args.reference_rounds,
            device=args.device, progress=lambda done, total: prog.update(task, completed=done),
        )  # fmt: skip
        counts = None
        if not args.no_ops:
            prog.update(task, description="profiling one step of each")
            fused = [c for c in cases if not c.reference]
            counts = {c.label: c for c in count_ops(fused, *shape, device=args.device)}
    table = Table(title="training step time (median), ratio to fp measured in this run")
    cols = ["configuration", "median step (ms)", "× fp", "steps timed"]
    if counts is not None:
        cols += ["profiler events / step", "× fp", "aten operators / step"]
        if args.device.startswith("cuda"):
            cols.append("kernel launches / step")
    for col in cols:
        table.add_column(col, justify="left" if col == "configuration" else "right")
    fp_ops = counts[results[0].label] if counts else None
    for r in results:
        row = [r.label, f"{1000 * r.median_s:.1f}", f"{r.ratio:.2f}", str(r.steps)]
        if counts is not None and fp_ops is not None:
            c = counts.get(r.label)
            row += (
                [str(c.events), f"{c.events / fp_ops.events:.2f}", str(c.operators)]
                if c is not None
                else ["—", "—", "—"]
            )
            if args.device.startswith("cuda"):
                row.append(str(c.launches) if c is not None else "—")
        table.add_row(*row)
    console.print(table)
    return 0


def _init_check(argv: list[str]) -> int:
    """Validation top-1 of binary configurations at a full-precision run's weights, as loaded
    and after recalibrating BatchNorm statistics (the start that init_from gives)."""
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table

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
    console = Console(emoji=False)  # "abc:M:N" is no emoji code
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
    from .models import list_models
    from .quant import list_quantizers

    Console().print(
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
    print(f"abc-lab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
