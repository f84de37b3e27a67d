"""`abc-lab bench`: training-step times of fp and ABC configurations, as ratios to fp."""

from __future__ import annotations

import argparse

from ..console import make_console

HELP = "time training steps of fp and ABC configurations side by side"


def main(argv: list[str]) -> int:
    """Time training steps of fp and ABC configurations side by side (ratios to fp)."""
    from rich.progress import Progress
    from rich.table import Table

    from ..bench import default_cases, run_benchmark

    p = argparse.ArgumentParser(prog="abc-lab bench", description=main.__doc__)
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
