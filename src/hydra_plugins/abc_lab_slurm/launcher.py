"""Hydra's submitit SLURM launcher with the errors a user can cause reported in one line.

`conf/hydra/launcher/slurm.yaml` selects it. Differences from the plugin it extends:

- a submission that ``sbatch`` refuses (a GPU asked of a CPU cluster, an unknown partition,
  more memory than a node has) ends with one line naming the setting to change and exit
  status 2, not a traceback;
- a job that ends without a result (cancelled with ``scancel``, killed at its time limit,
  its node lost) is reported in one line and its run record marked failed, and the other
  jobs' results and the multirun summary are still collected.

Hydra discovers launchers in the ``hydra_plugins`` namespace, hence the location.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import (
    SlurmLauncher as SubmititSlurmLauncher,
)

# (pattern in sbatch's message, the setting that fixes it)
REFUSALS = [
    (r"gres|generic resource|gpu", "hydra.launcher.gpus_per_node=0 (this cluster has no GPUs), "
     "or trainer=cpu"),
    (r"partition", "hydra.launcher.partition=<name> (see `sinfo`)"),
    (r"memory|node configuration is not available|mem",
     "hydra.launcher.mem_gb=<GB> and hydra.launcher.cpus_per_task=<n> (what a node has: "
     "`sinfo -o '%N %c %m'`)"),
    (r"time limit", "hydra.launcher.timeout_min=<minutes> (the partition's limit: `sinfo`)"),
    (r"account", "hydra.launcher.additional_parameters.account=<account>"),
    (r"qos", "hydra.launcher.qos=<qos>"),
]  # fmt: skip


def refusal_hint(message: str) -> str:
    """One line for an sbatch refusal: sbatch's reason and the launcher setting to change."""
    lines = [ln.strip() for ln in message.splitlines() if ln.strip()]
    reason = next(
        (ln for ln in reversed(lines) if "error" in ln.lower()), lines[-1] if lines else ""
    )
    reason = re.sub(r"^sbatch:\s*error:\s*", "", reason)
    for pattern, setting in REFUSALS:
        if re.search(pattern, reason, re.IGNORECASE):
            return f"sbatch refused the job ({reason}): set {setting}"
    return (
        f"sbatch refused the job ({reason}): change the hydra.launcher.* settings "
        "(conf/hydra/launcher/slurm.yaml)"
    )


def _job_dir(sweep_dir: Path, idx: int) -> Path | None:
    found = sorted(p for p in sweep_dir.glob(f"{idx}_*") if p.is_dir())
    if not found and (sweep_dir / str(idx)).is_dir():
        found = [sweep_dir / str(idx)]
    return found[0] if found else None


_QUEUED = {
    "PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING",
    "SIGNALING", "STAGE_OUT", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD",
}  # fmt: skip


def queue_state(job_id: str) -> str | None:
    """The job's state from ``squeue`` (None while squeue cannot tell, e.g. it is down)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-j", job_id, "-o", "%T"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if out.returncode != 0:
        return "GONE" if "invalid job id" in out.stderr.lower() else None
    states = out.stdout.split()
    return states[0] if states else "GONE"


def wait_for(jobs: Sequence[Any], poll_s: float = 2.0, grace_s: float = 10.0) -> list[str | None]:
    """Wait until every job has its result file or has left the queue without one.

    submitit asks ``sacct`` whether a job without a result has ended, and waits for ever on
    clusters without job accounting; ``squeue`` answers on every cluster. Returns, per job,
    None (result written) or the state it left the queue in (CANCELLED, TIMEOUT, ...).
    """
    ended: dict[int, str | None] = {}
    gone_since: dict[int, float] = {}
    while len(ended) < len(jobs):
        for i, job in enumerate(jobs):
            if i in ended:
                continue
            if job.paths.result_pickle.exists():
                ended[i] = None
                continue
            state = queue_state(job.job_id)
            if state is None or state in _QUEUED:
                continue
            # out of the queue: allow the result file a moment to appear (shared file systems)
            first = gone_since.setdefault(i, time.monotonic())
            if time.monotonic() - first > grace_s:
                ended[i] = state
        if len(ended) < len(jobs):
            time.sleep(poll_s)
    return [ended[i] for i in range(len(jobs))]


class SlurmLauncher(SubmititSlurmLauncher):
    """``hydra_submitit_launcher``'s SlurmLauncher, with one-line errors (module docstring)."""

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        import submitit
        from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
        from omegaconf import OmegaConf

        assert self.config is not None
        params = self.params
        init_keys = {"max_num_timeout", "submitit_folder"}
        init_params: dict[str, Any] = {"folder": params["submitit_folder"]}
        if "max_num_timeout" in params:
            init_params[f"{self._EXECUTOR}_max_num_timeout"] = params["max_num_timeout"]
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init_params)
        baseparams = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{
                k if k in baseparams else f"{self._EXECUTOR}_{k}": v
                for k, v in params.items()
                if k not in init_keys
            }
        )
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        job_params = []
        for i, overrides in enumerate(job_overrides):
            idx = initial_job_idx + i
            print(f"  #{idx} : {' '.join(filter_overrides(overrides))}", flush=True)
            job_params.append(
                (list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}",
                 Singleton.get_state())
            )  # fmt: skip
        try:
            jobs = executor.map_array(self, *zip(*job_params, strict=True))
        except submitit.core.utils.FailedJobError as err:
            print(f"error: {refusal_hint(str(err))}", file=sys.stderr, flush=True)
            sys.exit(2)
        print(f"submitted SLURM jobs {', '.join(j.job_id for j in jobs)}", flush=True)
        ended = wait_for(jobs)
        returns = []
        for i, job in enumerate(jobs):
            idx = initial_job_idx + i
            try:
                if ended[i] is not None:
                    raise submitit.core.utils.UncompletedJobError(f"left the queue {ended[i]}")
                returns.append(job.results()[0])
            except submitit.core.utils.UncompletedJobError as err:
                returns.append(self._failed(sweep_dir, idx, job, err, job_overrides[i]))
        return returns

    @staticmethod
    def _failed(sweep_dir: Path, idx: int, job: Any, err: Exception, overrides) -> JobReturn:
        """A job that ended without a result: one line, its record marked failed, and a
        completed JobReturn so Hydra goes on to the other jobs and the multirun summary."""
        from abc_lab.sweeps.metrics import mark_record, read_record

        state = getattr(job, "state", "UNKNOWN")
        first = next((ln for ln in str(err).splitlines() if ln.strip()), type(err).__name__)
        reason = f"SLURM job {job.job_id} ended {state}: {first.strip()}"
        print(f"job #{idx}: {reason}", file=sys.stderr, flush=True)
        run_dir = _job_dir(sweep_dir, idx)
        if run_dir is not None:
            record = read_record(run_dir)
            if record is not None and record.get("status") != "finished":
                mark_record(run_dir, "failed", reason)
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        ret.return_value = None
        return ret
