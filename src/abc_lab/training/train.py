"""One training job: check the inputs, wire the configured parts together, fit, test, record.

`train()` only instantiates and connects what the config describes (data module, model,
quantizer, LightningModule, loggers, callbacks, trainer); every default lives in conf/.
"""

from __future__ import annotations

import json
import warnings
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

from ..configs import config_dir
from ..console import make_console
from ..data import DataError
from ..errors import UserError
from ..quant import QuantConfig, summarize
from ..quant.calibrate import calibrate_activations, first_inputs
from ..quant.functional import set_kernel
from ..runs import derive_key, read_run
from ..runs.key import distill_active
from . import checkpoints as ckpts
from . import resume
from .callbacks import DataOrder, latest_checkpoint
from .checkpoint_io import AtomicCheckpointIO
from .distill import Distiller
from .faults import fault_callbacks
from .lightning_data import LightningData
from .optimizers import OptimizerSpec, resolve_group_settings
from .precheck import quick_checks
from .recorder import RunRecorder, git_info, library_versions
from .rundir import discard_run_dir  # noqa: F401  (re-exported)
from .teacher import load_teacher

console = make_console()


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
    """The run key (runs.key): every resolved config field that can change a result."""
    return derive_key(OmegaConf.to_container(cfg, resolve=True), q.used_fields())


def command_overrides() -> list[str] | None:
    """The command-line overrides of this job (Hydra's task overrides), when run by Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return None
    return list(HydraConfig.get().overrides.task)


def init_source(init_from: str | None) -> dict[str, Any] | None:
    """What ``init_from`` was: the label and setup of the run whose checkpoint it is (from its
    record), so that runs started from different sources are never averaged as seeds."""
    if not init_from:
        return None
    source = read_run(ckpts.run_dir_of(init_from))
    if source is None:
        return {"checkpoint": Path(init_from).name, "run": None}
    variant = json.dumps(source.variant, default=str)
    # the fp run at the start of an init_from chain (fp -> stage 1 -> stage 2): the baseline
    return {
        "run": source.label,
        "variant": variant,
        "fp_variant": variant if source.is_fp else source.fp_origin,
    }


def distill_record(teacher: str | None) -> dict[str, Any] | None:
    """What the record says of distillation: the teacher's source (as ``init.source`` says of
    init_from: its run's label and setup), or None without a teacher."""
    if not teacher:
        return None
    return {"teacher_source": init_source(teacher)}


def active_teacher(cfg: DictConfig) -> str | None:
    """The distillation teacher, or None where distillation is off (no teacher, or a teacher
    whose terms weigh 0: checked, never run)."""
    distill = cfg.module.get("distill") or {}
    flat = {f"module.distill.{name}": value for name, value in distill.items()}
    return distill["teacher"] if distill_active(flat) else None


# Training batches the activation quantizers are fitted on (quant.act_calibration).
CALIBRATION_BATCHES = 8
CALIBRATION_KEYS = ("error_before", "error_after", "window_before", "window_after")


@dataclass
class Checked:
    """What the pre-flight checks built and verified, handed on to training."""

    quant: QuantConfig
    datamodule: Any
    init_state: dict | None
    resume_path: str | None
    resume_state: dict | None
    resume_step: int | None = None
    teacher: torch.nn.Module | None = None
    param_groups: dict[str, OptimizerSpec | None] | None = None


def preflight(cfg: DictConfig, run_dir: Path) -> Checked:
    """Every check a user's input can fail, before anything trains or is recorded."""
    q = quant_config(cfg)
    quick_checks(cfg)
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
    resume = resume_state = resume_step = None
    if cfg.ckpt_path:
        if cfg.ckpt_path == "last":
            latest = latest_checkpoint(run_dir)
            if latest is None and read_run(run_dir) is None:
                raise UserError(
                    f"ckpt_path=last but '{run_dir}' holds no run to resume; point "
                    "hydra.run.dir at the run to resume or pass ckpt_path=<path to a .ckpt>"
                )
            if latest is None:  # killed before its first checkpoint: nothing to lose
                console.print(f"{run_dir} has no checkpoint yet: training it from the start")
            resume = None if latest is None else str(latest)
        else:
            resume = str(cfg.ckpt_path)
        if resume is not None:
            resume_ckpt = ckpts.read_checkpoint(resume, "ckpt_path")
            resume_state = ckpts.model_state(resume_ckpt)
            resume_step = resume_ckpt.get("global_step")
    checked = Checked(q, datamodule, init_state, resume, resume_state, resume_step)
    checked.param_groups = resolve_group_settings(
        cfg.module.get("param_groups"), build(cfg.optim, named=True), config_dir()
    )
    distill = cfg.module.get("distill")
    if distill and distill.teacher:
        checked.teacher, cfg.module.distill.teacher = load_teacher(cfg, distill.teacher)
    return checked


def build_module(cfg: DictConfig, model: torch.nn.Module, checked: Checked, num_classes: int):
    """The LightningModule from ``cfg.module``, given the model, optimizer and schedule
    factories, the resolved parameter groups and the distiller (when there is a teacher)."""
    settings = OmegaConf.to_container(cfg.module, resolve=True)
    distill = settings.pop("distill", None) or {}
    settings.pop("param_groups", None)
    distiller = None
    if checked.teacher is not None and active_teacher(cfg):
        distiller = Distiller(
            checked.teacher,
            temperature=distill["temperature"],
            weight=distill["weight"],
            feature_weight=distill["feature_weight"],
            layers=distill.get("feature_layers"),
        )
    return instantiate(
        settings,
        model=model,
        optimizer=build(cfg.optim, named=True),
        scheduler=build(cfg.schedule, named=True),
        num_classes=num_classes,
        param_groups=checked.param_groups,
        distiller=distiller,
    )


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


def calibrate(model: torch.nn.Module, dm, mode: str) -> dict[str, Any]:
    """Fit the ABC activation quantizers to the inputs they see (``quant.act_calibration``)
    on the first CALIBRATION_BATCHES training batches; the random draws it makes (order,
    augmentation) leave the training run's own random state as it was. Returns what the run
    record keeps: the mode, the batch count and each layer's relative error before and after."""
    with torch.random.fork_rng(devices=[]):
        batches = first_inputs(dm.train_dataloader(), CALIBRATION_BATCHES)
        fits = calibrate_activations(model, batches, mode)
    layers = {
        f.name: {
            **{field: round(getattr(f, field), 5) for field in CALIBRATION_KEYS},
            **({} if f.bn_scale is None else {"bn_scale": round(f.bn_scale, 5)}),
        }
        for f in fits
    }
    mean = {k: sum(v[k] for v in layers.values()) / max(len(layers), 1) for k in CALIBRATION_KEYS}
    console.print(
        f"activation calibration ({mode}): {len(fits)} layers on {len(batches)} batches; "
        f"mean relative error {mean['error_before']:.3f} -> {mean['error_after']:.3f}, "
        f"inputs inside an STE window {mean['window_before']:.0%} -> {mean['window_after']:.0%}"
    )
    return {"mode": mode, "batches": len(batches), "layers": layers}


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
    calibration = None
    if checked.quant.act_calibration and checked.resume_path is None:
        calibration = calibrate(model, dm, checked.quant.act_calibration)
    summary = summarize(model, dm.input_shape)
    if cfg.get("compile"):  # in place: state_dict keys and checkpoints stay those of the model
        model.compile(mode=cfg.compile if isinstance(cfg.compile, str) else None)
    run_dir.mkdir(parents=True, exist_ok=True)
    for stale in (run_dir / "checkpoints").glob(".*.ckpt.*.tmp"):  # a write killed half-way
        stale.unlink(missing_ok=True)
    OmegaConf.save(cfg, run_dir / "config.yaml", resolve=True)
    if cfg.print_config:
        print_config_tree(cfg, run_dir)
    console.print(summary.rich_table(f"{cfg.model.name} · {checked.quant.label()}"))

    module = build_module(cfg, model, checked, dm.num_classes)
    # resuming in the run's own directory continues its W&B run, CSV rows and start time
    # (ckpt_path=last on a run killed before its first checkpoint starts over, same W&B run)
    previous = resume.previous_record(run_dir) if cfg.ckpt_path else None
    loggers = [
        build(n, **resume.logger_kwargs(n, previous)) for n in cfg.logger.values() if n is not None
    ] if cfg.logger else []  # fmt: skip
    recorder = RunRecorder(
        run_dir,
        {
            "key": record_key(cfg, checked.quant),
            "quant": checked.quant.identity(),
            "overrides": command_overrides(),
            "init": {"source": init_source(cfg.init_from), "act_calibration": calibration},
            "distill": distill_record(active_teacher(cfg)),
            "config": OmegaConf.to_container(cfg, resolve=True),
            "summary": summary.totals(),
            "versions": library_versions(),
            "git": git_info(),
            "wandb": None,
        },
    )
    if previous is not None:
        recorder.continue_from(previous)
    callbacks = [build(n) for n in cfg.callbacks.values() if n is not None] if cfg.callbacks else []
    if not loggers:  # learning rates still reach results.json; the monitor needs a logger
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    # DataOrder continues a mid-epoch resume in that epoch's sample order, so Lightning's
    # warning about loaders that cannot resume does not apply
    warnings.filterwarnings("ignore", message="You're resuming from a checkpoint that ended")
    trainer: pl.Trainer = build(
        cfg.trainer,
        callbacks=[*callbacks, DataOrder(), recorder, *fault_callbacks()],
        logger=loggers,
        plugins=[AtomicCheckpointIO()],
    )
    wandb_logger = next((lg for lg in loggers if type(lg).__name__ == "WandbLogger"), None)
    init_args = getattr(wandb_logger, "_wandb_init", None)
    if isinstance(init_args, dict) and init_args.get("anonymous") is None:
        init_args.pop("anonymous", None)  # passed unset, W&B warns that the setting is gone
    if previous is not None and trainer.is_global_zero:
        for lg in loggers:
            if type(lg).__name__ == "CSVLogger":
                # no checkpoint: training starts over, so no earlier row is kept
                step = checked.resume_step if checked.resume_path else -1
                resume.continue_csv(lg, step)
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
        trainer.fit(module, datamodule=LightningData(dm), ckpt_path=checked.resume_path)
        if trainer.interrupted:
            raise KeyboardInterrupt("training was interrupted")
        ckpt_cb = trainer.checkpoint_callback
        recorder.accept_state = False
        if cfg.test:
            best = getattr(ckpt_cb, "best_model_path", "") if ckpt_cb is not None else ""
            trainer.test(
                module, datamodule=LightningData(dm), ckpt_path=best or None, weights_only=True
            )
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
