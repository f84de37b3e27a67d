"""Multirun and offline sweeps on a real one-node SLURM cluster (tests/slurm/cluster.py).

The cluster is installed (Debian's slurm-wlm and munge) and started for this module and
stopped after it; without root or apt-get the tests skip and say why. Trainings are the
shrunk ones of the sweep tests (1 epoch, a few batches of Fashion-MNIST).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from abc_lab.sweeps.metrics import read_record

from .cluster import Cluster, install, unavailable

pytestmark = pytest.mark.slurm

SHRINK = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "data.train_subset=256",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "logger=csv",
    "kernel=eager",
    "print_config=false",
    "callbacks.progress=null",
]
# one CPU and a little memory per job: fits any machine the cluster runs on
CPU_JOB = ["hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2",
           "hydra.launcher.timeout_min=30"]  # fmt: skip
ENV = {"ABC_LAB_KERNEL": "eager", "WANDB_MODE": "offline", "WANDB_SILENT": "true",
       "PYTHONUNBUFFERED": "1", "COLUMNS": "120"}  # fmt: skip


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    reason = unavailable()
    if reason:
        pytest.skip(reason)
    install()
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.env.update(ENV)
    try:
        c.start()
        yield c
    finally:
        c.stop()


def abc_lab(cluster: Cluster, *args: str, cwd: Path, timeout: float = 900):
    return subprocess.run(
        [sys.executable, "-m", "abc_lab.cli", *args], cwd=cwd, env=cluster.env,
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def queue_states(cluster: Cluster) -> dict[str, str]:
    out = cluster.run("squeue", "-h", "-r", "-t", "all", "-o", "%i %T").stdout
    return dict(line.split() for line in out.splitlines() if line.strip())


def wait_until_gone(cluster: Cluster, job_id: str, timeout_s: float = 600) -> str:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        state = queue_states(cluster).get(job_id, "GONE")
        if state not in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING"):
            return state
        time.sleep(1)
    raise AssertionError(f"SLURM job {job_id} still queued after {timeout_s} s")


def test_multirun_runs_each_job_as_a_slurm_job(cluster: Cluster, tmp_path: Path) -> None:
    sweep = tmp_path / "mr"
    res = abc_lab(
        cluster, "train", "-m", "hydra/launcher=slurm", *SHRINK, *CPU_JOB, "quant.M=1,3",
        f"hydra.sweep.dir={sweep}", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    line = next(ln for ln in res.stdout.splitlines() if ln.startswith("submitted SLURM jobs"))
    job_ids = line.split("jobs", 1)[1].replace(",", " ").split()
    assert len(job_ids) == 2
    # ran under slurmd (a job may still be COMPLETING when its result is in)
    assert [wait_until_gone(cluster, j, 120) for j in job_ids] == ["COMPLETED"] * 2
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2}
    assert sorted(j["overrides"][-1] for j in summary["jobs"]) == ["quant.M=1", "quant.M=3"]
    for job in summary["jobs"]:
        record = read_record(Path(job["job_dir"]))
        assert record is not None and record["status"] == "finished"
        assert record["key"]["quant.M"] in (1, 3) and record["metrics"]["test"]["acc1"] >= 0
    assert (sweep / "summary.md").is_file() and (sweep / "report" / "report.md").is_file()


@pytest.mark.xfail(
    reason="known flake: without job accounting (sacct) the state of a cancelled job can "
    "still read as running when the multirun ends",
    strict=False,
)
def test_multirun_job_cancelled_with_scancel_is_recorded_failed(
    cluster: Cluster, tmp_path: Path
) -> None:
    sweep = tmp_path / "mr"
    proc = subprocess.Popen(
        [sys.executable, "-m", "abc_lab.cli", "train", "-m", "hydra/launcher=slurm", *SHRINK,
         *CPU_JOB, "seed=0,1", f"hydra.sweep.dir={sweep}"],
        cwd=tmp_path, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        end = time.monotonic() + 600
        cancelled = None
        while time.monotonic() < end and cancelled is None and proc.poll() is None:
            time.sleep(0.5)
            job0 = [p for p in sweep.glob("0_*") if (read_record(p) or {}).get("status")]
            slurm0 = list((sweep / ".submitit").glob("*_0"))
            if job0 and slurm0 and read_record(job0[0])["status"] == "running":
                cancelled = slurm0[0].name
                cluster.run("scancel", cancelled)
        out, err = proc.communicate(timeout=900)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert cancelled is not None, "job 0 never started training"
    assert proc.returncode == 0, out[-2000:] + err[-2000:]
    assert f"job #0: SLURM job {cancelled} ended" in err and "Traceback" not in err
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"failed": 1, "finished": 1}, summary["counts"]
    failed = next(j for j in summary["jobs"] if j["status"] == "failed")
    assert failed["overrides"][-1] == "seed=0"
    assert read_record(Path(failed["job_dir"]))["status"] == "failed"


def test_refused_submission_ends_with_one_line_naming_the_setting(
    cluster: Cluster, tmp_path: Path
) -> None:
    # the test cluster has no GPUs: trainer=gpu makes the job ask for one, sbatch refuses
    res = abc_lab(
        cluster, "train", "-m", "hydra/launcher=slurm", "trainer=gpu", *SHRINK, *CPU_JOB,
        "quant.M=1,3", f"hydra.sweep.dir={tmp_path / 'mr'}", cwd=tmp_path, timeout=300,
    )  # fmt: skip
    assert res.returncode == 2, res.stdout[-2000:] + res.stderr[-2000:]
    assert "Traceback" not in res.stdout + res.stderr
    last = res.stderr.strip().splitlines()[-1]
    assert last.startswith("error: sbatch refused the job"), res.stderr[-2000:]
    assert "hydra.launcher.gpus_per_node=0" in last
    assert not [s for s in queue_states(cluster).values() if s == "PENDING"]


def test_cancelled_offline_sweep_job_is_recorded_failed_and_resumed(
    cluster: Cluster, tmp_path: Path
) -> None:
    from abc_lab.sweeps.offline import import_engine
    from abc_lab.sweeps.spec import SpecError

    try:
        import_engine()
    except SpecError as exc:
        pytest.skip(str(exc))
    spec = tmp_path / "grid.yaml"
    spec.write_text(
        textwrap.dedent("""\
        method: grid
        parameters:
          quant: {value: fp}
          seed: {values: [0, 1]}
        command:
          - ${env}
          - abc-lab
          - train
          - ${args_no_hyphens}
        """)
    )
    sweep = tmp_path / "sweep"
    cmd = [sys.executable, "-m", "abc_lab.cli", "sweep", str(spec), "--sweep-dir", str(sweep)]
    script = tmp_path / "sweep.sh"
    script.write_text("#!/bin/bash\nexec " + " ".join([*cmd, *SHRINK]) + "\n")
    os.chmod(script, 0o755)

    def submit(n: int) -> str:
        out = cluster.run(
            "sbatch", "--parsable", "-c", "1", "--mem=3G", f"--chdir={tmp_path}",
            f"--output={tmp_path / f'sweep-{n}.out'}", str(script),
        ).stdout  # fmt: skip
        return out.strip().split(";")[0]

    first = submit(1)
    end = time.monotonic() + 600
    run0 = None
    while time.monotonic() < end and run0 is None:
        time.sleep(0.5)
        try:
            runs = json.loads((sweep / "sweep.json").read_text())["runs"]
        except (OSError, ValueError, KeyError):
            continue
        record = read_record(sweep / "runs" / "run-000")  # training has begun
        if runs and runs[0]["state"] == "running" and record and record["status"] == "running":
            run0 = runs[0]
    assert run0 is not None, (tmp_path / "sweep-1.out").read_text()[-2000:]
    cluster.run("scancel", first)
    assert wait_until_gone(cluster, first) == "CANCELLED"
    runs = json.loads((sweep / "sweep.json").read_text())["runs"]
    assert runs[0]["state"] == "interrupted", runs  # the driver saw SIGTERM and said so
    record = read_record(sweep / "runs" / "run-000")  # kept in place, to continue from
    assert record is not None and record["status"] == "failed", record

    second = submit(2)
    assert wait_until_gone(cluster, second) == "COMPLETED"
    out = (tmp_path / "sweep-2.out").read_text()
    assert "re-running interrupted run-000 from its last checkpoint" in out, out[-3000:]
    runs = json.loads((sweep / "sweep.json").read_text())["runs"]
    assert [r["state"] for r in runs] == ["finished", "finished"], runs
    assert [a["state"] for a in runs[0]["attempts"]] == ["interrupted"]
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2}
