"""`abc-lab sweep <file.yaml> [options] [overrides...]`: run a W&B sweep definition.

Offline (the default) with W&B's open engine in a resumable sweep dir; online (``--online``
or ``WANDB_MODE=online``) through the W&B server and an agent. Extra Hydra overrides after
the file apply to every run, in both modes.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.markup import escape

from ..console import make_console
from ..sweeps.spec import SpecError, load_spec

HELP = "run a W&B sweep definition, online or offline (abc-lab sweep sweeps/bases.yaml)"

EPILOG = """examples:
  abc-lab sweep sweeps/bases.yaml                        # offline, every grid point
  abc-lab sweep sweeps/schedules.yaml --count 20 data=cifar10 quant.M=5
  abc-lab sweep sweeps/shifts.yaml --online --count 8 --project abc-lab
  abc-lab sweep sweeps/bases.yaml --check                # validate only
  abc-lab report "$(abc-lab sweep sweeps/bases.yaml --where)"  # report on that sweep

Offline, --count caps the runs the sweep holds in total: the same command run again
continues the sweep in the same directory (multirun/sweeps/<name>-<hash> unless
--sweep-dir): an interrupted run continues from its last checkpoint, finished ones are
never repeated, failed ones only with --retry-failed.
Online, --count is the number of runs this agent executes (W&B's meaning)."""


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="abc-lab sweep",
        description="Run a W&B sweep definition (sweeps/*.yaml), online or offline.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("file", type=Path, help="sweep definition in W&B's YAML format")
    p.add_argument("overrides", nargs="*", help="Hydra overrides applied to every run")
    p.add_argument("--count", type=int, help="runs in the sweep (offline) / of this agent (online)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--online",
        dest="online",
        action="store_true",
        default=None,
        help="create the sweep on the W&B server and run an agent",
    )
    mode.add_argument(
        "--offline",
        dest="online",
        action="store_false",
        help="run with W&B's open engine, no server (default unless WANDB_MODE=online)",
    )
    p.add_argument("--sweep-dir", type=Path, help="directory of the sweep's runs and state")
    p.add_argument(
        "--project", default=os.environ.get("WANDB_PROJECT", "abc-lab"), help="W&B project (online)"
    )
    p.add_argument("--entity", default=os.environ.get("WANDB_ENTITY"), help="W&B entity (online)")
    p.add_argument("--sweep-id", help="online: join this existing sweep instead of creating one")
    p.add_argument(
        "--stream",
        action="store_true",
        help="show each run's output here (default: runs/<name>/sweep_run.log)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="offline: train the sweep's failed runs again from the start",
    )
    p.add_argument("--check", action="store_true", help="validate the file and exit")
    p.add_argument(
        "--where",
        action="store_true",
        help="print the offline sweep directory (the file and overrides name it) and exit",
    )
    return p


def main(argv: list[str]) -> int:
    """Entry point of `abc-lab sweep`; returns the exit code (2 for a bad sweep or option)."""
    console = make_console()
    err = make_console(stderr=True)
    try:
        args = parser().parse_intermixed_args(argv)
    except SystemExit as exc:  # argparse printed the usage and the problem
        return int(exc.code or 0)
    online = args.online if args.online is not None else os.environ.get("WANDB_MODE") == "online"
    try:
        if args.count is not None and args.count < 1:
            raise SpecError(f"--count must be a positive number of runs, got {args.count}")
        spec = load_spec(args.file, args.overrides)
        if args.check:
            size = spec.grid_size()
            console.print(
                f"{spec.path}: ok ({spec.method}" + (f", {size} grid points" if size else "") + ")"
            )
            return 0
        if online:
            if args.retry_failed:
                raise SpecError("--retry-failed is for offline sweeps (online, start a new agent)")
            from ..sweeps.online import run_online

            return run_online(
                spec, args.sweep_dir, args.count, args.project, args.entity, args.sweep_id, console
            )
        from ..sweeps.offline import OfflineSweep, default_sweep_dir

        if args.where:
            print(args.sweep_dir or default_sweep_dir(spec, spec.extra))
            return 0
        if spec.method != "grid" and args.count is None and spec.run_cap is None:
            raise SpecError(
                f"{spec.path}: {spec.method} search never runs out of proposals; "
                "pass --count K (or set run_cap in the file)"
            )
        sweep_dir = args.sweep_dir or default_sweep_dir(spec, spec.extra)
        sweep = OfflineSweep(
            spec,
            sweep_dir,
            args.count,
            console,
            stream_output=args.stream,
            retry_failed=args.retry_failed,
        )
        console.print(f"sweep {spec.name} ({spec.method}, offline) in {sweep.sweep_dir}")
        return sweep.run()
    except SpecError as exc:
        err.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
