"""One training job: check the inputs, wire the configured parts together, fit, test, record.

`train()` only instantiates and connects what the config describes (data module, model,
quantizer, LightningModule, loggers, callbacks, trainer); every default lives in conf/.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import InterpolationResolutionError
from rich.console import Console

from ..data import DataError
from ..quant import QuantConfig, summarize
from ..quant.functional import set_kernel
from . import checkpoints as ckpts
from .callbacks import latest_checkpoint
from .errors import UserError
from .records import RunRecorder, git_info, library_versions

console = Console(stderr=False)


def build(node: DictConfig, named: bool = False, **kwargs: Any) -> Any:
    """Instantiate a config node. In ``named`` groups (data, optim, schedule) the ``name``
    key identifies the choice for run records and is not passed to the target."""
    cfg = OmegaConf.to_container(node, resolve=True)
    if named:
        cfg.pop("name", None)
    return instantiate(cfg, **kwargs)


def quant_config(cfg: DictConfig) -> QuantConfig:
    try:
        return build(cfg.quant)
    except Exception as err:
        raise UserError(_root_message(err) + " (check the quant.* overrides)") from err


def _root_message(err: BaseException) -> str:
    """The innermost message of an error chain (Hydra and OmegaConf wrap the real one)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__


def record_key(cfg: DictConfig, q: QuantConfig) -> dict[str, Any]:
    """The flat description of a run that sweeps and reports match on (docs/run-record.md)."""
    clip = cfg.trainer.get("gradient_clip_val")
    is_abc = q.name == "abc"
    has_act = is_abc and q.N > 0
    return {
        "model": cfg.model.name,
        "data": cfg.data.name,
        "quant": q.name,
        "label": q.label(),
        "M": q.M if is_abc else None,
        "N": q.N if is_abc else None,
        "alpha_scope": q.alpha_scope if is_abc else None,
        "trainable_shifts": q.trainable_shifts if is_abc else None,
        "act_shift_center": q.act_shift_center if has_act else None,
        "act_shift_spread": q.act_shift_spread if has_act else None,
        "epochs": int(cfg.trainer.max_epochs),
        "optimizer": cfg.optim.name,
        "lr": float(cfg.optim.lr),
        "weight_decay": float(cfg.optim.get("weight_decay", 0.0)),
        "schedule": cfg.schedule.name,
        "warmup_epochs": cfg.schedule.get("warmup_epochs", 0),
        "batch_size": int(cfg.data.batch_size),
        "augment": bool(cfg.data.get("augment", True)),
        "train_subset": cfg.data.get("train_subset"),
        "label_smoothing": float(cfg.module.label_smoothing),
        "seed": int(cfg.seed),
        "precision": str(cfg.trainer.get("precision", "32-true")),
        "gradient_clip_val": None if clip is None else float(clip),
        "init_from": str(Path(cfg.init_from).resolve()) if cfg.init_from else None,
    }


@dataclass
class Checked:
    """What the pre-flight checks built and verified, handed on to training."""

    quant: QuantConfig
    datamodule: Any
    init_state: dict | None
    resume_path: str | None
    resume_state: dict | None


def preflight(cfg: DictConfig, run_dir: Path) -> Checked:
    """Every check a user's input can fail, before anything trains or is recorded."""
    q = quant_config(cfg)
    lr = cfg.optim.get("lr")
    if not isinstance(lr, int | float) or lr <= 0:
        raise UserError(f"learning rate optim.lr={lr} must be a number > 0; pass e.g. optim.lr=0.1")
    epochs = cfg.trainer.get("max_epochs")
    if not isinstance(epochs, int) or epochs < 1:
        raise UserError(f"trainer.max_epochs={epochs} must be an integer >= 1")
    try:
        datamodule = build(cfg.data, named=True)
        datamodule.check()
    except DataError as err:
        raise UserError(str(err)) from err
    except Exception as err:
        raise UserError(f"data config is invalid: {_root_message(err)}") from err
    init_state = None
    try:
        init_from = cfg.init_from
    except InterpolationResolutionError as err:
        raise UserError(f"init_from: {_root_message(err)}") from err
    if init_from:
        cfg.init_from = ckpts.run_checkpoint(init_from, "init_from")
        init_state = ckpts.model_state(ckpts.read_checkpoint(cfg.init_from, "init_from"))
    resume = resume_state = None
    if cfg.ckpt_path:
        if cfg.ckpt_path == "last":
            latest = latest_checkpoint(run_dir)
            if latest is None:
                raise UserError(
                    f"ckpt_path=last but '{run_dir}/checkpoints' holds no last.ckpt; point "
                    "hydra.run.dir at the run to resume or pass ckpt_path=<path to a .ckpt>"
                )
            resume = str(latest)
        else:
            resume = str(cfg.ckpt_path)
        resume_state = ckpts.model_state(ckpts.read_checkpoint(resume, "ckpt_path"))
    return Checked(q, datamodule, init_state, resume, resume_state)


def build_model(cfg: DictConfig, checked: Checked) -> torch.nn.Module:
    """Float model from the registry, optional fp initialisation, then quantization."""
    try:
        model = build(cfg.model)
    except ValueError as err:
        raise UserError(_root_message(err)) from err
    model = ckpts.quantize_from(
        model, checked.init_state, checked.quant, "init_from", cfg.init_from
    )
    if checked.resume_state is not None:
        ckpts.check_compatible(model, checked.resume_state, "ckpt_path", checked.resume_path)
    return model


def print_config_tree(cfg: DictConfig, run_dir: Path) -> None:
    """The composed config as a rich tree, printed and saved as config_tree.txt."""
    from rich.syntax import Syntax
    from rich.tree import Tree

    tree = Tree("[bold]config[/]")
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key, value in resolved.items():
        if isinstance(value, dict):
            branch = tree.add(f"[cyan]{key}[/]")
            branch.add(Syntax(OmegaConf.to_yaml(value).rstrip(), "yaml", theme="ansi_dark"))
        else:
            tree.add(f"[cyan]{key}[/]: {value}")
    console.print(tree)
    with open(run_dir / "config_tree.txt", "w") as fh:
        Console(file=fh, width=100, no_color=True).print(tree)


def train(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    """Train and test one configuration; returns the final run record."""
    run_dir = Path(run_dir)
    checked = preflight(cfg, run_dir)
    set_kernel(cfg.kernel)
    pl.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_model(cfg, checked)
    dm = checked.datamodule
    summary = summarize(model, dm.input_shape)
    if cfg.get("compile"):  # in place: state_dict keys and checkpoints stay those of the model
        model.compile(mode=cfg.compile if isinstance(cfg.compile, str) else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if cfg.print_config:
        print_config_tree(cfg, run_dir)
    console.print(summary.rich_table(f"{cfg.model.name} · {checked.quant.label()}"))

    module = build(
        cfg.module,
        model=model,
        optimizer=build(cfg.optim, named=True),
        scheduler=build(cfg.schedule, named=True),
        num_classes=dm.num_classes,
    )
    loggers = [build(n) for n in cfg.logger.values() if n is not None] if cfg.logger else []
    recorder = RunRecorder(
        run_dir,
        {
            "key": record_key(cfg, checked.quant),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "summary": summary.totals(),
            "versions": library_versions(),
            "git": git_info(),
            "wandb": None,
        },
    )
    callbacks = [build(n) for n in cfg.callbacks.values() if n is not None] if cfg.callbacks else []
    if not loggers:  # learning rates still reach results.json; the monitor needs a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: pl.Trainer = build(cfg.trainer, callbacks=[*callbacks, recorder], logger=loggers)
    wandb_logger = next((lg for lg in loggers if type(lg).__name__ == "WandbLogger"), None)
    status, error = "failed", None
    try:
        if wandb_logger is not None:
            exp = wandb_logger.experiment
            recorder.record["wandb"] = {
                "id": exp.id,
                "path": None if wandb_logger._offline else getattr(exp, "path", None),
                "mode": "offline" if wandb_logger._offline else "online",
                "dir": str(getattr(exp, "dir", "")),
            }
            exp.summary.update({f"model/{k}": v for k, v in summary.totals().items()})
        for lg in loggers:
            lg.log_hyperparams({"key": recorder.record["key"], "summary": summary.totals()})
        trainer.fit(module, datamodule=dm, ckpt_path=checked.resume_path)
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        ckpt_cb = trainer.checkpoint_callback
        recorder.accept_state = False
        if cfg.test:
            best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb is not None else ""
            trainer.test(module, datamodule=dm, ckpt_path=best or None, weights_only=True)
        status = "finished"
        if ckpt_cb is not None:
            last = latest_checkpoint(run_dir)
            recorder.record["checkpoints"] = {
                "last": str(last) if last else None,
                "best": ckpt_cb.best_model_path or None,
            }
    except BaseException as err:
        if isinstance(err, SIGTERMException):
            error = "terminated by SIGTERM"
        else:
            error = f"{type(err).__name__}: {err}"
        raise
    finally:
        if trainer.is_global_zero:  # other DDP ranks must not overwrite rank 0's record
            recorder.finish(status, error)
        if wandb_logger is not None:
            import wandb

            wandb.finish(exit_code=0 if status == "finished" else 1)
    return recorder.record


def discard_run_dir(run_dir: Path) -> None:
    """Remove a run directory that holds no result (only Hydra's own files), if it is one."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    leftovers = {p.name for p in run_dir.iterdir()} - {".hydra", "train.log"}
    if not leftovers:
        shutil.rmtree(run_dir, ignore_errors=True)
