"""`abc-lab bench-startup`: how long the quick answers of the CLI take, start to exit.

Each command runs ``--repeats`` times as a fresh process (as a user types it) in a scratch
directory; the table gives the median, fastest and slowest wall time. A benchmark, not a
test: machines are noisy, so compare figures measured in one run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP = "time the quick answers (--help, --cfg job, rejected input) as fresh processes"

COMMANDS: dict[str, list[str]] = {
    "abc-lab --help": ["--help"],
    "abc-lab train --help": ["train", "--help"],
    "abc-lab train --cfg job": ["train", "--cfg", "job"],
    "abc-lab train quant.M=0 (rejected)": ["train", "quant.M=0"],
    "abc-lab train model=resnet999 (rejected)": ["train", "model=resnet999"],
}


def command_prefix() -> list[str]:
    """The installed console script beside this Python, else ``python -m abc_lab.cli``."""
    script = Path(sys.executable).with_name("abc-lab")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "abc_lab.cli"]


def time_command(argv: list[str], repeats: int, cwd: Path) -> tuple[list[float], int]:
    """Wall times of ``repeats`` runs of ``argv`` and the exit code of the last one."""
    times, code = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        done = subprocess.run(
            [*command_prefix(), *argv], cwd=cwd, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, env={**os.environ, "ABC_LAB_KERNEL": "eager"},
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
        code = done.returncode
    return times, code


def main(argv: list[str]) -> int:
    from rich.table import Table

    from ..console import make_console

    p = argparse.ArgumentParser(prog="abc-lab bench-startup", description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=5, help="runs per command (default: 5)")
    p.add_argument("--only", nargs="+", choices=list(COMMANDS), help="time only these commands")
    args = p.parse_args(argv)
    console = make_console()
    table = Table(title=f"start-up wall time, {args.repeats} runs each (seconds)")
    for col in ("command", "median", "min", "max", "exit code"):
        table.add_column(col, justify="left" if col == "command" else "right")
    with tempfile.TemporaryDirectory(prefix="abc-lab-startup-") as scratch:
        for name, command in COMMANDS.items():
            if args.only and name not in args.only:
                continue
            times, code = time_command(command, args.repeats, Path(scratch))
            table.add_row(
                name, f"{statistics.median(times):.2f}", f"{min(times):.2f}",
                f"{max(times):.2f}", str(code),
            )  # fmt: skip
    console.print(table)
    return 0
