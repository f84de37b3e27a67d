"""`abc-lab bench`: training-step times of fp, ABC and baseline configurations, as ratios
to fp, with the operators PyTorch's profiler counts per step."""

from __future__ import annotations

import argparse

from ..console import make_console

HELP = "time training steps side by side (--inference: the bitwise engine against torch float)"


def device_problem(device: str) -> str | None:
    """Why ``device`` cannot run the benchmark here, or None."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        return str(err).splitlines()[0]
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return "no CUDA device is available on this machine (try --device cpu)"
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return f"this machine has {torch.cuda.device_count()} CUDA device(s)"
    elif dev.type != "cpu":
        return "only cpu and cuda devices are supported"
    return None


def main(argv: list[str]) -> int:
    if "--inference" in argv:
        from .bench_inference import main as bench_inference

        return bench_inference([a for a in argv if a != "--inference"])
    return training_step(argv)


def training_step(argv: list[str]) -> int:
    """Time training steps of fp, ABC and baseline configurations side by side (ratios to
    fp), and count the operators PyTorch's profiler records in one step of each."""
    import platform

    import torch
    from rich.progress import Progress
    from rich.table import Table

    from ..bench import count_ops, default_cases, run_benchmark

    p = argparse.ArgumentParser(prog="abc-lab bench", description=training_step.__doc__)
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
    console = make_console()
    problem = device_problem(args.device)
    if problem:
        console.print(f"[bold red]error:[/] --device {args.device}: {problem}")
        return 2
    cases = default_cases(
        reference=[] if args.no_reference else None,
        baselines=not args.no_baselines,
        compile_model=args.compile,
        gpu=args.device.startswith("cuda"),
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
