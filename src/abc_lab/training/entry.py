"""`abc-lab train`: the Hydra entry point, error reporting and the closing summary.

torch, Lightning and W&B are imported only once a job runs and its config passed the quick
checks, so `--help`, `--cfg` and rejected input answer without loading them.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback
import warnings
from pathlib import Path

from omegaconf import DictConfig

from ..configs import config_dir
from ..console import make_console, mirror_to
from ..errors import UserError
from ..runs import RECORD_NAME, now_iso, write_record
from ..runs.metrics import metric_value
from .resolvers import register_resolvers

LOG_NAME = "train.log"


def _is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def _run_dir() -> Path:
    from hydra.core.hydra_config import HydraConfig

    return Path(HydraConfig.get().runtime.output_dir)


def _closing_summary(record: dict, console) -> None:
    from .baseline import describe_gap

    test = (record.get("metrics") or {}).get("test") or {}
    acc = test.get("acc1")
    label = record["quant"]["label"]
    line = f"[bold green]done[/] {record['key']['model.name']} {label}: "
    line += f"test top-1 {100 * acc:.2f}%" if acc is not None else "no test metrics"
    console.print(line)
    # paths and commands are printed whole (soft_wrap): they must stay copyable
    console.print(
        describe_gap(record, Path(record["run_dir"]) / RECORD_NAME), soft_wrap=True, highlight=False
    )
    console.print(f"run directory: {record['run_dir']}", soft_wrap=True)
    console.print(f"record: {Path(record['run_dir']) / RECORD_NAME}", soft_wrap=True)
    if record["checkpoints"].get("best"):
        console.print(f"best checkpoint: {record['checkpoints']['best']}", soft_wrap=True)
    if record.get("wandb"):
        w = record["wandb"]
        if w["mode"] == "offline":
            console.print(
                f"W&B (offline): upload with `wandb sync {w['dir'].rsplit('/files', 1)[0]}`",
                soft_wrap=True,
            )
        else:
            console.print(f"W&B: {w['path']}", soft_wrap=True)


class _DropMessages(logging.Filter):
    """Drop log records whose message contains one of ``needles`` (third-party noise)."""

    def __init__(self, *needles: str) -> None:
        super().__init__()
        self.needles = needles

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(n in message for n in self.needles)


class _WarningLines(logging.Filter):
    """Warnings as log lines: without the formatted warning's final newline (the handler adds
    its own), and each distinct text once per process (Lightning repeats some per stage)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().rstrip("\n")
        record.msg, record.args = text, ()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def route_logs() -> None:
    """Python warnings, and Lightning's messages, through the job's logging configuration
    (terminal and train.log, conf/hydra/default.yaml) instead of their own handlers."""
    logging.captureWarnings(True)
    warnings_logger = logging.getLogger("py.warnings")
    if not any(isinstance(f, _WarningLines) for f in warnings_logger.filters):
        warnings_logger.addFilter(_WarningLines())
    if logging.getLogger().handlers:  # Hydra configured logging: one place prints
        lightning_logger = logging.getLogger("lightning")
        for handler in list(lightning_logger.handlers):
            if type(handler) is logging.StreamHandler:
                lightning_logger.removeHandler(handler)


def quiet_third_party_noise() -> None:
    """Targeted filters for messages that say nothing about the run: Lightning's advert for
    its cloud logger, and notices repeated per stage (fit, test): shown once."""
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(
        _DropMessages("try installing [litlogger]")
    )
    # the same deprecation notice from fit and from test: show each once (FutureWarning and
    # Lightning's deprecations are shown by default; other DeprecationWarnings stay hidden)
    warnings.filterwarnings("once", category=FutureWarning)
    try:  # Lightning turns its own deprecation category on ("default": once per call site)
        from lightning.fabric.utilities.rank_zero import LightningDeprecationWarning

        warnings.filterwarnings("once", category=LightningDeprecationWarning)
    except ImportError:  # pragma: no cover - lightning is a dependency
        pass


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
    from .precheck import quick_checks

    run_dir = _run_dir()
    route_logs()
    err_console = make_console(stderr=True)
    mirror_to(err_console, run_dir / LOG_NAME)
    try:
        quick_checks(cfg)
    except UserError as err:
        _reject(err, cfg, run_dir, err_console)
        return None
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from .train import console, discard_run_dir, train

    route_logs()  # again: importing Lightning added its own handler
    quiet_third_party_noise()
    mirror_to(console, run_dir / LOG_NAME)
    try:
        record = train(cfg, run_dir)
    except UserError as err:
        _reject(err, cfg, run_dir, err_console, discard_run_dir)
        return None
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


def _reject(err: UserError, cfg: DictConfig, run_dir: Path, err_console, discard=None) -> None:
    """Bad input: one line; a failed record in a multirun, else no run dir and exit 2."""
    err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
    if _is_multirun():
        write_record(run_dir, failed_at_start(cfg, run_dir, str(err)))
        return
    mirror_to(err_console, None)
    if discard is None:
        from .rundir import discard_run_dir as discard
    logging.shutdown()  # close train.log so that the empty run dir can go
    discard(run_dir)
    sys.exit(2)


def config_error_message(err: Exception) -> str:
    """One line for a Hydra composition error: an unknown group option names the choices,
    an unknown key names the options of its parent."""
    from hydra.errors import MissingConfigException, OverrideParseException

    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, name = str(err.missing_cfg_file).rpartition("/")
        if group:
            return f"unknown {group} '{name}'; choose one of {', '.join(err.options)}"
    if isinstance(err, OverrideParseException):
        return f"cannot parse the override '{err.override}': {err.message.splitlines()[0]}"
    cause = err.__cause__
    parent = getattr(cause, "parent_node", None)
    full_key = getattr(cause, "full_key", None)
    if full_key and parent is not None and "not in struct" in str(cause):
        where = full_key.rpartition(".")[0]
        keys = [str(k) for k in parent.keys()]
        options = ", ".join(k for k in keys if not k.startswith("_") and k != "hydra")
        owner = f"of {where}" if where else "of the config"
        override = str(err).splitlines()[-1].rpartition(" use ")[2]
        hint = f"; to add a new key write {override}" if override.startswith("+") else ""
        return f"{full_key} is not an option {owner} (options: {options}){hint}"
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    if cause is not None and str(cause).strip():
        first += f" ({str(cause).strip().splitlines()[0]})"
    return first


def config_groups(root: Path) -> dict[str, list[str]]:
    """The application's config groups (not Hydra's own) and their options, read from
    ``root`` as Hydra lists them: ``group/sub`` for nested groups, options sorted."""
    groups: dict[str, list[str]] = {}
    for path in sorted(root.rglob("*.yaml")):
        group = path.parent.relative_to(root).as_posix()
        if group != "." and group.split("/")[0] != "hydra":
            groups.setdefault(group, []).append(path.stem)
    return {g: sorted(options) for g, options in sorted(groups.items())}


def app_help(argv: list[str]) -> str:
    """`abc-lab train --help [overrides]`: Hydra's help template, filled in one composition
    (Hydra's own --help composes the config again for every group and option: seconds)."""
    import string

    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict

    overrides = [a for a in argv if a not in ("--help", "-h", "--resolve")]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(config_dir()), version_base="1.3", job_name="train"):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    template = str(cfg.hydra.help.template)
    with open_dict(cfg):
        del cfg["hydra"]
    groups = "".join(f"{g}: {', '.join(o)}\n" for g, o in config_groups(config_dir()).items())
    return string.Template(template).safe_substitute(
        APP_CONFIG_GROUPS=groups,
        CONFIG=OmegaConf.to_yaml(cfg, resolve="--resolve" in argv),
    )


def run_hydra(argv: list[str]) -> int:
    """Run `abc-lab train` with Hydra command-line semantics (overrides, -m, --help, --cfg)."""
    import hydra
    from hydra.errors import ConfigCompositionException, OverrideParseException

    register_resolvers()
    main = hydra.main(config_path=str(config_dir()), config_name="train", version_base="1.3")(task)
    saved = sys.argv
    # argv[0] is a runnable script so that DDP can start the other ranks with the same command
    sys.argv = [str(Path(__file__).with_name("app.py")), *argv]
    user_full_error = os.environ.get("HYDRA_FULL_ERROR")
    # let Hydra's errors reach this function instead of Hydra printing them and exiting 1
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        if ("--help" in argv or "-h" in argv) and "--hydra-help" not in argv:
            print(app_help(argv))
        else:
            main()
    except (ConfigCompositionException, OverrideParseException) as err:
        if user_full_error == "1":
            raise
        make_console(stderr=True).print(
            f"[bold red]error:[/] {config_error_message(err)}", highlight=False, soft_wrap=True
        )
        return 2
    except Exception:
        if user_full_error == "1":
            raise
        traceback.print_exc()
        return 1
    finally:
        sys.argv = saved
        if user_full_error is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = user_full_error
    return 0
