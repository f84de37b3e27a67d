"""The distillation teacher (``module.distill.teacher``): found, checked and built before
training, from the teacher run's own config (its model and quantizer) and its weights.

A teacher the student cannot learn from is a user error, reported in one line: a path that
does not exist, a run that has not finished, a checkpoint outside a run directory, another
dataset (``data.name``, class count or input shape) or another architecture (model config
or weights that do not fit).
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf
from torch import nn

from ..errors import UserError
from . import checkpoints as ckpts

WHAT = "module.distill.teacher"
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
    model, _, checkpoint = ckpts.trained_model(
        path, WHAT, check=lambda teacher_cfg: _check_same_task(student, teacher_cfg, path)
    )
    return model.eval().requires_grad_(False), checkpoint
