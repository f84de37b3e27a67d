"""Nothing lost under kills and failed writes.

A training killed with SIGKILL (injected at five points: ABC_LAB_FAULT) and resumed with the
README's command ends as one finished record whose history has every epoch once, one W&B run
for the job, and no stray process. A checkpoint write that fails half-way (a full disk) leaves
the previous checkpoint loadable.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest
import torch

from .conftest import ABC_LAB, SHRINK_CLI, cli_env

pytestmark = pytest.mark.faults

EPOCHS = 2
TRAIN = [
    "train",
    *[s for s in SHRINK_CLI if not s.startswith(("trainer.max_epochs", "+trainer.limit_train"))],
    f"trainer.max_epochs={EPOCHS}",
    "+trainer.limit_train_batches=4",
    "callbacks.checkpoint_steps.every_n_train_steps=2",
    "logger=wandb",
    "hydra.run.dir=run",
]


def abc_lab(args: list[str], cwd: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [ABC_LAB, *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env=cli_env(**env),
    )  # fmt: skip


def strays(marker: Path) -> list[int]:
    """Processes whose command line names ``marker`` (a test's own directory)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            cwd = os.readlink(proc / "cwd")
        except OSError:
            continue
        if str(marker) in cmdline or cwd.startswith(str(marker)):
            found.append(int(proc.name))
    return found


@pytest.mark.parametrize(
    "fault",
    [
        "first_step",
        "mid_epoch:3",
        "validation",
        "checkpoint_write:2",
        "test",
    ],
)
def test_killed_training_resumes_to_one_complete_record(tmp_path: Path, fault: str) -> None:
    killed = abc_lab(TRAIN, tmp_path, ABC_LAB_FAULT=fault)
    assert killed.returncode == -9, killed.stderr[-2000:]
    record_path = tmp_path / "run" / "results.json"
    before = json.loads(record_path.read_text()) if record_path.is_file() else None
    if before is not None:
        assert before["status"] == "running"  # a kill leaves no chance to close the record

    resumed = abc_lab([*TRAIN, "ckpt_path=last"], tmp_path)  # README's resume command
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    record = json.loads(record_path.read_text())
    assert record["status"] == "finished" and record["epochs_done"] == EPOCHS
    assert [h["epoch"] for h in record["history"]] == list(range(EPOCHS))
    assert record["metrics"]["test"]["acc1"] is not None
    if before is not None and before.get("wandb"):
        assert record["wandb"]["id"] == before["wandb"]["id"]  # one W&B run for the job
        assert record["started_at"] == before["started_at"]
    assert not list((tmp_path / "run" / "checkpoints").glob(".*.tmp"))  # no half-written files
    assert strays(tmp_path) == []


def test_a_checkpoint_write_that_fails_half_way_keeps_the_previous_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from abc_lab.training import checkpoint_io

    target = tmp_path / "last.ckpt"
    io = checkpoint_io.AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 1}, target)
    calls = {"n": 0}
    real = checkpoint_io.write_chunk

    def full_disk(fh, chunk):
        calls["n"] += 1
        real(fh, chunk[: len(chunk) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint_io, "write_chunk", full_disk)
    with pytest.raises(OSError, match="No space left"):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 2}, target)
    assert calls["n"] == 1
    kept = torch.load(target, weights_only=True)
    assert kept["epoch"] == 1 and torch.equal(kept["state_dict"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # the partial file is gone
