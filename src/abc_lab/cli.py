"""The `abc-lab` command: train | sweep | report | bench | init-check | export | evaluate | models.

`abc-lab train` hands its arguments to Hydra unchanged (overrides, -m, --help, --cfg);
the other subcommands are small argparse front-ends over library functions.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

USAGE = """usage: abc-lab <command> [args]

commands:
  train    train one model (Hydra overrides, e.g. model=resnet34 quant.M=5; -m for multirun)
  sweep    run a W&B sweep definition, online or offline (abc-lab sweep sweeps/bases.yaml)
  report   compare runs with their full-precision baselines (abc-lab report outputs/...)
  bench    time training steps side by side (--inference: bitwise engine vs torch float)
  init-check  top-1 of binary configurations at an fp run's weights (what init_from gives)
  export   write a trained run as a packed binary model file (abc-lab export <run dir>)
  evaluate top-1 of a packed model with the bitwise engine, checked against the simulation
  models   list models and quantizers

`abc-lab <command> --help` explains each."""


def _bench(argv: list[str]) -> int:
    """Time training steps of fp and ABC configurations side by side (ratios to fp)."""
    if "--inference" in argv:
        return _bench_inference([a for a in argv if a != "--inference"])
    from rich.progress import Progress
    from rich.table import Table

    from .bench import default_cases, run_benchmark

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
    console = Console()
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


def _export(argv: list[str]) -> int:
    """Write a trained run (its best checkpoint) or a .ckpt as a packed binary model file."""
    from rich.markup import escape

    from .engine.export import ExportError, export_run
    from .engine.format import FormatError, load_packed

    p = argparse.ArgumentParser(prog="abc-lab export", description=_export.__doc__)
    p.add_argument("source", help="run directory of abc-lab train, or a .ckpt inside one")
    p.add_argument(
        "--out", help="file to write (default <run dir>/export/<model>-<quant>.safetensors)"
    )
    args = p.parse_args(argv)
    console = Console(emoji=False, soft_wrap=True)
    try:
        path = export_run(args.source, args.out)
        _, meta = load_packed(path)
    except (ExportError, FormatError) as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}")
        return 2
    layers = meta["layers"]
    binary = sum(1 for e in layers.values() if e["input"] is not None)
    console.print(
        f"wrote {escape(str(path))}: {meta['model']['name']} {meta['label']}, "
        f"{len(layers)} quantized layers ({binary} binary x binary), "
        f"{meta['payload_bytes']:,} bytes of tensors = summary packed weights "
        f"{meta['summary_packed_bytes']:,} + BatchNorm statistics {meta['buffer_bytes']:,}"
    )
    return 0


def _evaluate(argv: list[str]) -> int:
    """Test top-1 of a packed model with the bitwise engine, image by image against the
    float simulation of the same file; names every image on which they disagree."""
    from hydra.utils import instantiate
    from rich.markup import escape
    from rich.progress import Progress

    from .engine import kernels
    from .engine.bench import update_run_file
    from .engine.evaluate import REL_TOL, evaluate
    from .engine.format import FormatError, load_packed
    from .engine.runtime import build_engine

    p = argparse.ArgumentParser(prog="abc-lab evaluate", description=_evaluate.__doc__)
    p.add_argument("model", help="packed model file written by abc-lab export")
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--data-dir", default=None, help="where the dataset's files are")
    p.add_argument("--show", type=int, default=20, help="disagreeing images printed")
    args = p.parse_args(argv)
    console = Console(emoji=False, soft_wrap=True)
    try:
        tensors, meta = load_packed(args.model)
        data = meta.get("data")
        if not isinstance(data, dict) or "_target_" not in data:
            raise FormatError(
                f"model file '{args.model}' records no dataset; export it from a run directory"
            )
        engine = build_engine(tensors, meta, "auto", args.model)
        simulated = build_engine(tensors, meta, "simulated", args.model)
        overrides = {"batch_size": args.batch_size, "eval_batch_size": args.batch_size}
        if args.data_dir:
            overrides["data_dir"] = args.data_dir
        fields = {k: v for k, v in data.items() if k != "name"}  # name: the group's label
        dm = instantiate({**fields, **overrides})
        dm.setup("test")
        loader = dm.test_dataloader()
    except Exception as err:  # a bad file, or data that cannot be found: one line each
        console.print(f"[bold red]error:[/] {escape(str(err).splitlines()[0])}")
        return 2
    total = len(loader.dataset) if args.limit is None else min(args.limit, len(loader.dataset))
    with Progress(console=console, transient=True) as prog:
        task = prog.add_task("engine + simulation", total=total)
        result = evaluate(
            engine, simulated, loader, args.limit, lambda n: prog.update(task, completed=n)
        )
    backend = kernels.isa_name() if engine.backend == "native" else "simulated (no kernels)"
    record = (meta.get("source") or {}).get("record_test_acc1")
    console.print(
        f"{meta['model']['name']} {meta['label']} on {result.images} test images: engine "
        f"top-1 {100 * result.top1_engine:.2f}% ({backend}), simulation "
        f"{100 * result.top1_simulated:.2f}%"
        + (f", run record {100 * record:.2f}%" if record is not None else "")
    )
    console.print(
        f"images where the predicted class differs: {result.class_disagreements}; "
        f"logits differing by more than {REL_TOL:g} (relative): {len(result.disagreements)}; "
        f"largest relative logit difference {result.max_rel_diff:.2e}; "
        f"time engine {result.engine_s:.1f} s, simulation {result.simulated_s:.1f} s"
    )
    for d in result.disagreements[: args.show]:
        fmt = ", ".join
        console.print(
            f"  image {d.index} (label {d.label}, rel. diff {d.rel_diff:.2e})\n"
            f"    engine    [{fmt(f'{v:.5f}' for v in d.engine)}]\n"
            f"    simulated [{fmt(f'{v:.5f}' for v in d.simulated)}]"
        )
    run_dir = (meta.get("source") or {}).get("run_dir")
    if run_dir and args.limit is None and Path(run_dir).is_dir():
        summary = {
            "images": result.images, "top1_engine": result.top1_engine,
            "top1_simulated": result.top1_simulated, "record_test_acc1": record,
            "class_disagreements": result.class_disagreements,
            "logit_disagreements": len(result.disagreements),
            "max_rel_diff": result.max_rel_diff, "backend": backend,
            "disagreeing_images": [d.index for d in result.disagreements],
        }  # fmt: skip
        written = update_run_file(run_dir, "evaluate", summary, meta)
        console.print(f"recorded in {escape(str(written))}")
    return 0


def _bench_inference(argv: list[str]) -> int:
    """Time the bitwise engine against torch float32 and bfloat16 on the same architecture,
    per layer and for the whole network, in interleaved rounds (ratios measured in one run)."""
    from datetime import datetime

    from rich.markup import escape
    from rich.table import Table

    from .engine import kernels
    from .engine.bench import (
        CONFIGS,
        MODELS,
        RUN_FILE,
        SCHEMA,
        bench_model,
        bench_run_latency,
        machine,
        update_run_file,
        write_json,
    )  # fmt: skip
    from .engine.export import ExportError, export_run
    from .engine.format import FormatError
    from .engine.runtime import load_model

    p = argparse.ArgumentParser(
        prog="abc-lab bench --inference", description=_bench_inference.__doc__
    )
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="fp, xnor, abc:M:N ...")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", nargs="+", type=int, default=None, help="default: 1 and all")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--no-layers", action="store_true", help="whole networks only")
    p.add_argument("--no-bf16", action="store_true", help="skip torch bfloat16")
    p.add_argument("--run", nargs="+", default=[], help="run directories: time their models "
                   f"and write <run dir>/{RUN_FILE} instead of the synthetic matrix")
    p.add_argument(
        "--out", default=None, help="JSON file (default outputs/bench/<time>/inference.json)"
    )
    args = p.parse_args(argv)
    console = Console(emoji=False, soft_wrap=True)
    if kernels.native() is None:
        console.print("[bold red]error:[/] the bitwise kernels are unavailable; nothing to time")
        return 2
    threads = args.threads or sorted({1, torch_threads()})
    if args.run:
        for run in args.run:
            try:
                engine = load_model(export_run(run), "native")
            except (ExportError, FormatError) as err:
                console.print(f"[bold red]error:[/] {escape(str(err))}")
                return 2
            rows = bench_run_latency(engine, args.batch, threads, args.rounds)
            path = update_run_file(run, "latency", rows, engine.meta)
            for r in rows:
                console.print(
                    f"{escape(run)} {engine.meta['label']}: batch {r['batch']}, {r['threads']} "
                    f"thread(s): engine {r['engine_ms']:.2f} ms, {r['speedup_fp32']:.2f}x fp32, "
                    f"{r['speedup_bf16']:.2f}x bf16"
                )
            console.print(f"wrote {escape(str(path))}")
        return 0
    try:
        from .engine.bench import parse_config

        for c in args.configs:
            parse_config(c)
    except ValueError as err:
        console.print(f"[bold red]error:[/] --configs: {escape(str(err))}")
        return 2
    results = []
    for model in args.models:
        for t in threads:
            for b in args.batch:
                console.print(f"timing {model}, batch {b}, {t} thread(s) ...")
                results += bench_model(
                    model, args.configs, b, t, args.rounds, not args.no_layers, not args.no_bf16
                )
    for model in args.models:
        table = Table(
            title=f"{model}: speed-up of the engine, x torch float32 (medians / fastest rounds)"
            " and x bfloat16 (medians)"
        )
        table.add_column("layer")
        table.add_column("config")
        keys = [(b, t) for t in threads for b in args.batch]
        for b, t in keys:
            table.add_column(f"b{b} t{t}", justify="right")
        rows: dict[tuple[str, str], dict] = {}
        for r in results:
            if r.model == model:
                rows.setdefault((r.scope, r.config), {})[(r.batch, r.threads)] = r
        for (scope, config), cells in rows.items():
            vals = []
            for k in keys:
                r = cells.get(k)
                bf = "-" if r is None or r.vs_bf16 is None else f"{r.vs_bf16:.2f}"
                vals.append("" if r is None else f"{r.vs_fp32:.2f} ({r.vs_fp32_min:.2f}) / {bf}")
            table.add_row(scope, config, *vals)
        console.print(table)
    out = Path(args.out) if args.out else Path("outputs/bench") / datetime.now().strftime(
        "%Y-%m-%d_%H-%M-%S") / RUN_FILE  # fmt: skip
    write_json(out, {
        "schema": SCHEMA, "version": 1, "machine": machine(), "rounds": args.rounds,
        "command": "abc-lab bench --inference " + " ".join(argv),
        "results": [r.to_dict() for r in results],
    })  # fmt: skip
    console.print(f"wrote {escape(str(out))}")
    return 0


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


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
    if command == "export":
        return _export(rest)
    if command == "evaluate":
        return _evaluate(rest)
    if command == "models":
        return _models(rest)
    print(f"abc-lab: unknown command {command!r}\n\n{USAGE}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
