"""Compose the real training config (conf/) and shrink it, as the template projects do."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from abc_lab.configs import config_dir
from abc_lab.training.resolvers import register_resolvers

# a few batches of a small subset: the parts are real, the run is short
SHRINK = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=2",
    "+trainer.limit_val_batches=1",
    "+trainer.limit_test_batches=1",
    "data.train_subset=64",
    "data.batch_size=16",
    "data.eval_batch_size=64",
    "logger=none",
    "kernel=eager",
    "print_config=false",
]


@pytest.fixture
def compose_cfg(tmp_path):
    """compose(overrides) -> the real config, with Hydra's runtime set to tmp_path/run."""
    register_resolvers()

    def _compose(*overrides: str, shrink: bool = True):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(config_dir()), version_base="1.3"):
            cfg = compose(
                "train", overrides=[*(SHRINK if shrink else []), *overrides],
                return_hydra_config=True,
            )  # fmt: skip
        run_dir = tmp_path / "run"
        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
            cfg.hydra.job.num = 0
            cfg.paths.output_dir = str(tmp_path / "outputs")
            cfg.paths.multirun_dir = str(tmp_path / "multirun")
        HydraConfig.instance().set_config(cfg)
        return cfg, run_dir

    yield _compose
    GlobalHydra.instance().clear()


ABC_LAB = str(Path(sys.executable).with_name("abc-lab"))


def cli_env(**extra: str) -> dict[str, str]:
    """Environment for `abc-lab` subprocesses: eager kernels, offline W&B, wide output."""
    return {**os.environ, "ABC_LAB_KERNEL": "eager", "WANDB_MODE": "offline",
            "PYTHONUNBUFFERED": "1", "COLUMNS": "120", **extra}  # fmt: skip


def run_cli(*args: str, cwd: Path, timeout: int = 300, env: dict | None = None):
    """Run the installed `abc-lab` console script; returns the CompletedProcess."""
    return subprocess.run(
        [ABC_LAB, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env=cli_env(**(env or {})),
    )  # fmt: skip


SHRINK_CLI = [*SHRINK, "callbacks.progress=null"]


def move_run(run_dir: Path, dest: Path) -> Path:
    """Move a finished run (compose_cfg puts every run in tmp_path/run) to ``dest``, with its
    record naming its checkpoints where they now are, so the next run can start from it."""
    shutil.move(run_dir, dest)
    record = json.loads((dest / "results.json").read_text())
    for kind, path in (record.get("checkpoints") or {}).items():
        if path:
            record["checkpoints"][kind] = str(dest / "checkpoints" / Path(path).name)
    (dest / "results.json").write_text(json.dumps(record))
    return dest
