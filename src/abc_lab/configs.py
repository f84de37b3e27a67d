"""Where the Hydra configuration lives: the checkout's conf/, or ABC_LAB_CONFIG_DIR."""

from __future__ import annotations

import os
from pathlib import Path


def config_dir() -> Path:
    """The ``conf/`` directory `abc-lab train` composes (``ABC_LAB_CONFIG_DIR`` when set)."""
    env = os.environ.get("ABC_LAB_CONFIG_DIR")
    if env:
        return Path(env).resolve()
    return Path(__file__).resolve().parents[2] / "conf"
