"""`abc-lab report <run or sweep dirs…> [--name] [--out] [--notes FILE] [--keep-records]`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..console import make_console

HELP = "compare runs with their full-precision baselines (abc-lab report outputs/...)"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(
        prog="abc-lab report",
        description="Compare binary runs with their full-precision baselines, from the "
        "results.json records under the given run or sweep directories.",
    )
    p.add_argument("paths", nargs="+", type=Path, help="run or sweep directories (searched)")
    p.add_argument("--name", help="report name (default: the last directory's name)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="reports root folder")
    p.add_argument(
        "--notes",
        type=Path,
        help="Markdown file of findings written into the report after its header",
    )
    p.add_argument(
        "--keep-records",
        action="store_true",
        help="copy the records into <out>/<name>/records/ and build from the copy",
    )
    args = p.parse_args(argv)
    from ..reports.build import build_report
    from ..runs import load_runs

    console = make_console()
    loaded = load_runs(args.paths)
    if not loaded.runs:
        searched = ", ".join(str(p) for p in args.paths)
        why = "; ".join(f"{p.path}: {p.reason}" for p in loaded.problems[:3])
        make_console(stderr=True).print(
            f"[bold red]error:[/] no usable run records in {searched} "
            f"({loaded.files_seen} results.json read{'; ' + why if why else ''})",
            highlight=False,
        )
        return 1
    name = args.name or args.paths[-1].resolve().name
    try:  # build_report prints the main table and where it wrote
        out = build_report(
            list(args.paths),
            name,
            out_root=args.out,
            console=console,
            notes=args.notes,
            keep_records=args.keep_records,
        )
    except ValueError as err:
        console.print(f"[bold red]error:[/] {err}")
        return 2
    return 0 if out.is_dir() else 1
