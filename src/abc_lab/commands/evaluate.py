"""`abc-lab evaluate`: test top-1 of a packed model with the bitwise engine."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..console import make_console

HELP = "top-1 of a packed model with the bitwise engine, checked against the simulation"


def main(argv: list[str]) -> int:
    """Test top-1 of a packed model with the bitwise engine, image by image against the
    simulation of the same file; names every image on which they disagree, and exits 1 if
    any does (the engine is exact: a difference is a defect)."""
    from hydra.utils import instantiate
    from rich.markup import escape
    from rich.progress import Progress

    from ..engine import kernels
    from ..engine.bench import update_run_file
    from ..engine.evaluate import REL_TOL, evaluate
    from ..engine.format import FormatError, load_packed
    from ..engine.runtime import build_engine

    p = argparse.ArgumentParser(prog="abc-lab evaluate", description=main.__doc__)
    p.add_argument("model", help="packed model file written by abc-lab export")
    p.add_argument("--limit", type=int, default=None, help="first N test images only")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--data-dir", default=None, help="where the dataset's files are")
    p.add_argument("--show", type=int, default=20, help="disagreeing images printed")
    args = p.parse_args(argv)
    console = make_console(emoji=False)
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
    if result.disagreements:
        # the kernels compute the reference arithmetic to the bit: any difference is a defect
        console.print(
            f"[bold red]error:[/] the engine and the simulation differ on "
            f"{len(result.disagreements)} image(s); they should agree to the bit"
        )
        return 1
    return 0
