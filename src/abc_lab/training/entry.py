"""`abc-lab train`: the Hydra entry point, error reporting and the closing summary."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig
from rich.console import Console

from ..configs import config_dir
from ..errors import UserError
from ..runs import RECORD_NAME, now_iso, write_record
from ..runs.metrics import metric_value
from .resolvers import register_resolvers


def _is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_dir() -> Path:
    return Path(HydraConfig.get().runtime.output_dir)


def _closing_summary(record: dict, console: Console) -> None:
    from .baseline import describe_gap

    test = (record.get("metrics") or {}).get("test") or {}
    acc = test.get("acc1")
    label = record["quant"]["label"]
    line = f"[bold green]done[/] {record['key']['model.name']} {label}: "
    line += f"test top-1 {100 * acc:.2f}%" if acc is not None else "no test metrics"
    console.print(line)
    console.print(describe_gap(record, Path(record["run_dir"]) / RECORD_NAME))
    console.print(f"run directory: {record['run_dir']}")
    console.print(f"record: {Path(record['run_dir']) / RECORD_NAME}")
    if record["checkpoints"].get("best"):
        console.print(f"best checkpoint: {record['checkpoints']['best']}")
    if record.get("wandb"):
        w = record["wandb"]
        if w["mode"] == "offline":
            console.print(
                f"W&B (offline): upload with `wandb sync {w['dir'].rsplit('/files', 1)[0]}`"
            )
        else:
            console.print(f"W&B: {w['path']}")


def failed_at_start(cfg: DictConfig, run_dir: Path, error: str) -> dict:
    """The record of a job rejected before training (bad input in a multirun): failed, with
    as much of its key as the config gives, so that reports count and name it."""
    from omegaconf import OmegaConf

    from ..runs import derive_key

    try:
        config = OmegaConf.to_container(cfg, resolve=True)
    except Exception:  # an interpolation that cannot resolve is part of the error
        config = OmegaConf.to_container(cfg, resolve=False)
    quant = config.get("quant") or {}
    fields = [k for k in quant if k not in ("_target_", "name")]
    name = str(quant.get("name"))
    now = now_iso()
    return {
        "status": "failed", "error": error, "run_dir": str(run_dir.resolve()),
        "started_at": now, "finished_at": now, "wall_time_s": 0.0, "epochs_done": 0,
        "key": derive_key(config, fields), "config": config, "metrics": {}, "history": [],
        "quant": {"name": name, "label": name, "family": name, "weight_bases": None,
                  "activation_bases": None, "fields": fields},
    }  # fmt: skip


def task(cfg: DictConfig) -> float | None:
    """Run one job and return its ``optimized_metric`` (for Hydra sweeper plugins; None when
    not measured). Bad input: one line on stderr and exit 2 (single run) or a failed
    record (multirun, so the other jobs go on). A crash: failed record, then exit 1 for a
    single run; a multirun records it and continues."""
    from .train import discard_run_dir, train

    console = Console()
    err_console = Console(stderr=True)
    run_dir = _run_dir()
    try:
        record = train(cfg, run_dir)
    except UserError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
        if _is_multirun():
            write_record(run_dir, failed_at_start(cfg, run_dir, str(err)))
            return None
        discard_run_dir(run_dir)
        sys.exit(2)
    except KeyboardInterrupt:
        err_console.print(f"[bold red]interrupted[/]; the run is recorded in {run_dir}")
        raise
    except SIGTERMException:  # Lightning's is a SystemExit with code 0: exit like a killed job
        err_console.print(f"[bold red]terminated[/] (SIGTERM); the run is recorded in {run_dir}")
        sys.exit(128 + signal.SIGTERM)
    except Exception as err:
        err_console.print(f"[bold red]training failed:[/] {type(err).__name__}: {err}")
        err_console.print(f"the run is recorded as failed in {run_dir / RECORD_NAME}")
        if _is_multirun():
            return None
        raise
    if int(os.environ.get("LOCAL_RANK", "0")) == 0 and int(os.environ.get("NODE_RANK", "0")) == 0:
        _closing_summary(record, console)
    return metric_value(record, cfg.get("optimized_metric") or "best_val/acc1")


def run_hydra(argv: list[str]) -> int:
    """Run `abc-lab train` with Hydra command-line semantics (overrides, -m, --help, --cfg)."""
    register_resolvers()
    main = hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(task)
    saved = sys.argv
    # argv[0] is a runnable script so that DDP can start the other ranks with the same command
    sys.argv = [str(Path(__file__).with_name("app.py")), *argv]
    try:
        main()
    finally:
        sys.argv = saved
    return 0
