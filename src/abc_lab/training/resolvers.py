"""OmegaConf resolvers used by conf/: ``${data_info:num_classes}`` and friends.

The model config reads the data's class count, channels and input size through
``data_info``, so `model=resnet34 data=cifar10` adapts the stem and classifier without
further overrides. The data module is constructed (cheap: no data is read) to ask it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from hydra.utils import get_class
from omegaconf import DictConfig, OmegaConf

from ..errors import UserError
from ..runs import RECORD_NAME, Run, load_record

_cache: dict[str, object] = {}


def _data_module(data_cfg: DictConfig):
    plain = OmegaConf.to_container(data_cfg, resolve=True)
    key = json.dumps(plain, sort_keys=True, default=str)
    if key not in _cache:
        cls = get_class(plain.pop("_target_"))
        plain.pop("name", None)
        _cache[key] = cls(**plain)
    return _cache[key]


def data_info(field: str, _root_: DictConfig) -> int:
    """An attribute (num_classes, in_channels, input_size) of the configured data module."""
    if field not in ("num_classes", "in_channels", "input_size"):
        raise ValueError(f"data_info knows num_classes, in_channels, input_size; got {field!r}")
    return int(getattr(_data_module(_root_.data), field))


def wandb_offline() -> bool:
    """Offline unless the environment asks for online W&B (WANDB_MODE=online, or a W&B
    sweep agent, which sets WANDB_SWEEP_ID)."""
    return not (os.environ.get("WANDB_MODE") == "online" or os.environ.get("WANDB_SWEEP_ID"))


def sweep_run(variant: str, run_dir: str) -> str:
    """The directory of the finished run of ``variant`` beside ``run_dir``.

    Runs of one sweep are sibling directories, so a variant that starts from another
    (``init_from: ${sweep_run:fp,${hydra:runtime.output_dir}}``) finds it by the
    ``variant`` name in the sibling's record. The newest finished one wins.
    """
    parent = Path(run_dir).resolve().parent
    found: list[tuple[str, Path]] = []
    for path in parent.glob(f"*/{RECORD_NAME}"):
        run = load_record(path)
        if not isinstance(run, Run) or run.status != "finished":
            continue
        if (run.record.get("config") or {}).get("variant") == variant:
            found.append((str(run.record.get("finished_at") or ""), path.parent))
    if not found:
        raise UserError(
            f"no finished run of variant={variant} beside this run (in {parent}); the sweep "
            f"must train variant={variant} first (list it before the variants that start from it)"
        )
    return str(max(found)[1])


def unique_dir(base: str) -> str:
    """A new directory named ``base``, or ``base-2``, ``base-3``… if that exists: created here.

    ``mkdir`` fails when the directory exists, atomically, also on shared file systems
    (NFS), so jobs started in the same second on one or several machines each get their
    own run directory. Registered with a cache: Hydra resolves it once per job.
    """
    Path(base).parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while True:
        path = Path(base if n == 1 else f"{base}-{n}")
        try:
            path.mkdir()
            return str(path)
        except FileExistsError:
            n += 1


def slurm_gpus(accelerator: str, devices: object) -> int:
    """GPUs a SLURM job asks for, from the trainer: its device count on gpu/cuda, else 0."""
    if str(accelerator) not in ("gpu", "cuda"):
        return 0
    return int(devices) if isinstance(devices, int) and devices > 0 else 1


def register_resolvers() -> None:
    if not OmegaConf.has_resolver("unique_dir"):
        OmegaConf.register_new_resolver("unique_dir", unique_dir, use_cache=True)
    if not OmegaConf.has_resolver("slurm_gpus"):
        OmegaConf.register_new_resolver("slurm_gpus", slurm_gpus)
    if not OmegaConf.has_resolver("data_info"):
        OmegaConf.register_new_resolver("data_info", data_info)
    if not OmegaConf.has_resolver("wandb_offline"):
        OmegaConf.register_new_resolver("wandb_offline", wandb_offline)
    if not OmegaConf.has_resolver("sweep_run"):
        OmegaConf.register_new_resolver("sweep_run", sweep_run)
