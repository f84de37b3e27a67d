"""The distillation teacher (``module.distill.teacher``): found, checked and built before
training, from the teacher run's own config (its model and quantizer) and its weights.

A teacher the student cannot learn from is a user error, reported in one line: a path that
does not exist, a run that has not finished, a checkpoint outside a run directory, another
dataset (``data.name``, class count or input shape) or another architecture (model config
or weights that do not fit).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..errors import UserError
from ..quant import QuantConfig, quantize_model
from . import checkpoints as ckpts

WHAT = "module.distill.teacher"
CONFIG = "config.yaml"
# model fields that follow the data (data_info): a difference means another dataset
DATA_SHAPE = ("num_classes", "in_channels", "input_size")


def _plain(node: Any) -> Any:
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


def _check_same_task(student: DictConfig, teacher: dict[str, Any], path: str) -> None:
    """Raise UserError unless the teacher saw the same data and has the same architecture."""
    s_model, t_model = _plain(student.model), teacher.get("model") or {}
    s_data = student.data.get("name")
    t_data = (teacher.get("data") or {}).get("name")
    if s_data != t_data:
        raise UserError(
            f"{WHAT} '{path}' was trained on other data (data.name {t_data} vs {s_data}); "
            "use a teacher trained on this run's dataset"
        )
    for name in DATA_SHAPE:
        if t_model.get(name) != s_model.get(name):
            raise UserError(
                f"{WHAT} '{path}' was trained on other data (model.{name} {t_model.get(name)} "
                f"vs {s_model.get(name)}); use a teacher trained on this run's dataset"
            )
    for name in sorted(set(s_model) | set(t_model)):
        if name == "_target_" or name in DATA_SHAPE:
            continue
        if t_model.get(name) != s_model.get(name):
            raise UserError(
                f"{WHAT} '{path}' is another architecture (model.{name} {t_model.get(name)} "
                f"vs {s_model.get(name)}); use a teacher of this run's model"
            )


def load_teacher(student: DictConfig, path: str) -> tuple[nn.Module, str]:
    """The frozen teacher for the student config ``student`` from ``path`` (a finished run
    directory: its best checkpoint; or a .ckpt in a run directory), and the checkpoint used."""
    checkpoint = ckpts.run_checkpoint(path, WHAT)
    ckpt = ckpts.read_checkpoint(checkpoint, WHAT)
    config_file = ckpts.run_dir_of(checkpoint) / CONFIG
    if not config_file.is_file():
        raise UserError(
            f"{WHAT} '{path}' is not in a run directory with {CONFIG} (the teacher's model "
            "and quantizer are read from it); pass a run directory of abc-lab train or a "
            ".ckpt inside one"
        )
    try:
        teacher_cfg = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    except Exception as err:
        raise UserError(f"{WHAT} '{path}': {config_file} is not readable ({err})") from err
    if not isinstance(teacher_cfg, dict) or not isinstance(teacher_cfg.get("model"), dict):
        raise UserError(f"{WHAT} '{path}': {config_file} has no model section")
    _check_same_task(student, teacher_cfg, path)
    try:
        model = instantiate(teacher_cfg["model"])
        quant_fields = {
            k: v for k, v in (teacher_cfg.get("quant") or {}).items() if not k.startswith("_")
        }
        quant = QuantConfig(**quant_fields)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{WHAT} '{path}': its model or quantizer cannot be built ({reason})"
        ) from err
    model = quantize_model(model, quant)
    state = ckpts.model_state(ckpt)
    ckpts.check_compatible(model, state, WHAT, path)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False), str(Path(checkpoint).resolve())
