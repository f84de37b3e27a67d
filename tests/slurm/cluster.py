"""A real one-node SLURM cluster on this machine, for the tests: Debian's slurm-wlm and
munge, a private configuration for localhost, munged + slurmctld + slurmd started as root
and stopped afterwards.

Everything the cluster writes (configuration, state, spool, logs) lives in one directory;
clients find it through ``SLURM_CONF``. The daemons listen on free ports, so another
cluster on the machine is left alone. ``unavailable()`` says why it cannot run (not root,
no apt-get), so the tests skip with that reason instead of passing.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

PACKAGES = ("slurm-wlm", "munge")
DAEMONS = ("munged", "slurmctld", "slurmd")
MUNGE_SOCKET = Path("/run/munge/munge.socket.2")


def unavailable() -> str | None:
    """Why a cluster cannot be set up here, or None."""
    if os.name != "posix" or os.geteuid() != 0:
        return (
            "the SLURM cluster test needs root (it installs and starts slurmctld, slurmd, munged)"
        )
    if not all(shutil.which(d) for d in ("slurmctld", "slurmd", "munged", "sbatch")):
        if not shutil.which("apt-get"):
            return "the SLURM cluster test needs apt-get to install slurm-wlm and munge"
    return None


def install() -> None:
    """apt-get install slurm-wlm munge, unless they are there already."""
    if all(shutil.which(d) for d in ("slurmctld", "slurmd", "munged", "sbatch", "squeue")):
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES],
        check=True, env=env, capture_output=True,
    )  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _mem_mb() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return 4096


class Cluster:
    """A running one-node cluster; ``env`` is what SLURM clients need (SLURM_CONF)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.host = socket.gethostname().split(".")[0]
        self.conf = self.root / "slurm.conf"
        self.cpus = os.cpu_count() or 1
        self.mem_mb = max(1024, int(_mem_mb() * 0.8))
        self.pids: dict[str, int] = {}
        self.env = {**os.environ, "SLURM_CONF": str(self.conf)}

    def write_config(self) -> None:
        for sub in ("state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        r = self.root
        self.conf.write_text(
            f"""ClusterName=abclabtest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
AuthType=auth/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation={r}/state
SlurmdSpoolDir={r}/spool
SlurmctldPidFile={r}/slurmctld.pid
SlurmdPidFile={r}/slurmd.pid
SlurmctldLogFile={r}/log/slurmctld.log
SlurmdLogFile={r}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
SchedulerType=sched/builtin
MpiDefault=none
ReturnToService=2
KillWait=30
MinJobAge=600
InactiveLimit=0
SlurmdTimeout=120
NodeName={self.host} NodeAddr=127.0.0.1 CPUs={self.cpus} RealMemory={self.mem_mb} State=UNKNOWN
PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""
        )

    def _start(self, name: str, args: list[str]) -> None:
        log = open(self.root / "log" / f"{name}.out", "ab")  # noqa: SIM115 - kept open by the daemon
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        self.pids[name] = proc.pid

    def start(self, timeout_s: float = 60.0) -> None:
        self.write_config()
        if (
            not MUNGE_SOCKET.exists()
            or subprocess.run(["munge", "-n"], capture_output=True).returncode
        ):
            key = Path("/etc/munge/munge.key")
            if not key.exists():
                subprocess.run(["mungekey", "--create", "--force"], check=True, capture_output=True)
            for d in ("/run/munge", "/var/log/munge", "/var/lib/munge"):
                Path(d).mkdir(parents=True, exist_ok=True)
            self._start("munged", ["munged", "--foreground", "--force"])
            self._wait(lambda: subprocess.run(["munge", "-n"], capture_output=True).returncode == 0,
                       timeout_s, "munged")  # fmt: skip
        self._start("slurmctld", ["slurmctld", "-D", "-f", str(self.conf)])
        self._wait(lambda: self.run("sinfo", check=False).returncode == 0, timeout_s, "slurmctld")
        self._start("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.host])
        self._wait(self._node_idle, timeout_s, "slurmd")

    def _node_idle(self) -> bool:
        out = self.run("sinfo", "-h", "-o", "%t", check=False).stdout.split()
        return bool(out) and all(s.startswith("idle") or s.startswith("mix") for s in out)

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if ready():
                return
            for name, pid in self.pids.items():
                if name == what and not _alive(pid):
                    raise RuntimeError(f"{what} exited; see {self.root / 'log'}:\n{self.logs()}")
            time.sleep(0.5)
        raise RuntimeError(f"{what} not ready after {timeout_s:.0f} s:\n{self.logs()}")

    def logs(self) -> str:
        parts = []
        for f in sorted((self.root / "log").glob("*")):
            parts.append(
                f"--- {f.name}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-15:])
            )
        return "\n".join(parts)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """A SLURM client command (sbatch, squeue, scancel, ...) against this cluster."""
        return subprocess.run(list(args), capture_output=True, text=True, env=self.env,
                              check=check, timeout=60)  # fmt: skip

    def stop(self) -> None:
        """Cancel what is left, then stop the daemons this cluster started (last first)."""
        self.run("scancel", "--full", "-u", "root", check=False)
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            for sig, wait in ((signal.SIGTERM, 15.0), (signal.SIGKILL, 5.0)):
                if not _alive(pid):
                    break
                os.kill(pid, sig)
                end = time.monotonic() + wait
                while _alive(pid) and time.monotonic() < end:
                    time.sleep(0.2)
        self.pids.clear()


def _alive(pid: int) -> bool:
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == 0
    except ChildProcessError:
        try:
            os.kill(pid, 0)
            return True
        except ProcessLookupError:
            return False
