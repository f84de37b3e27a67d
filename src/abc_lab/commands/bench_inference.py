"""`abc-lab bench --inference`: the bitwise engine against torch float32 and bfloat16."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..console import make_console

HELP = "the bitwise engine against torch float on the same architecture"


def main(argv: list[str]) -> int:
    """Time the bitwise engine against torch float32 and bfloat16 on the same architecture,
    per layer and for the whole network, in interleaved rounds (ratios measured in one run)."""
    from datetime import datetime

    from rich.markup import escape
    from rich.table import Table

    from ..engine import kernels
    from ..engine.bench import (
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
    from ..engine.export import ExportError, export_run
    from ..engine.format import FormatError
    from ..engine.runtime import load_model

    p = argparse.ArgumentParser(prog="abc-lab bench --inference", description=main.__doc__)
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--configs", nargs="+", default=CONFIGS, help="fp, xnor, abc:M:N ...")
    p.add_argument("--batch", nargs="+", type=int, default=[1, 32])
    p.add_argument("--threads", nargs="+", type=int, default=None, help="default: 1 and all")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timed rounds")
    p.add_argument("--no-layers", action="store_true", help="whole networks only")
    p.add_argument("--no-bf16", action="store_true", help="skip torch bfloat16")
    p.add_argument(
        "--run",
        nargs="+",
        default=[],
        help="run directories: time their models "
        f"and write <run dir>/{RUN_FILE} instead of the synthetic matrix",
    )
    p.add_argument(
        "--out", default=None, help="JSON file (default outputs/bench/<time>/inference.json)"
    )
    args = p.parse_args(argv)
    console = make_console(emoji=False)
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
        from ..quant import parse_quant_spec

        for c in args.configs:
            parse_quant_spec(c)
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
