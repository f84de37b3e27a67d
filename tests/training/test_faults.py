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


def _weights(run: Path) -> dict[str, torch.Tensor]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
    return ckpt["state_dict"]


def test_a_run_resumed_mid_epoch_trains_on_the_same_samples_as_one_never_killed(
    tmp_path: Path,
) -> None:
    """Killed after batch 3 of 4, resumed from the step checkpoint after batch 2: the rest
    of the epoch comes from that epoch's order (DataOrder, EpochShuffle), so the weights end
    bit for bit where an uninterrupted run's do. Without it the resumed epoch drew a new
    order: some samples twice, others not at all."""
    args = [*TRAIN, "data.augment=false", "logger=none"]  # augmentation draws from the RNG
    (tmp_path / "whole").mkdir()
    (tmp_path / "killed").mkdir()
    whole = abc_lab(args, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    killed = abc_lab(args, tmp_path / "killed", ABC_LAB_FAULT="mid_epoch:3")
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = abc_lab([*args, "ckpt_path=last"], tmp_path / "killed")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "dataloader is not resumable" not in resumed.stderr
    a, b = _weights(tmp_path / "whole" / "run"), _weights(tmp_path / "killed" / "run")
    assert a.keys() == b.keys()
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert different == []
