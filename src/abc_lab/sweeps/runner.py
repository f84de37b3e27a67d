"""The sweep runner: one loop, state file, lock and process management for every engine.

Each proposed run is an ``abc-lab train`` subprocess (its own process group) in
``<sweep dir>/runs/<name>``; its metric is read back from the run record
(``results.json``), whose history is polled while it trains so the engine can stop it
early (the process group is terminated and the record marked ``stopped``). The state
lives in ``<sweep dir>/sweep.json``, saved after every change: running the same command
again continues the sweep, and a run that was interrupted (its driver died, SIGTERM,
Ctrl-C) continues from its last checkpoint in its own directory (``ckpt_path=last``; a run
killed before it wrote a record starts again, its partial directory kept under
``interrupted/``) — never counted as done. ``retry_failed`` trains failed runs again from
the start, their directories kept under ``interrupted/``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.markup import escape

from ..console import make_console
from ..runs import RECORD_NAME, derive_key, now_iso, write_json_atomic
from .job_summary import JobRow, job_row, summarize
from .metrics import mark_record, metric_history, read_record, summary_metrics
from .spec import SpecError, SweepSpec, compose_train

STATE_NAME = "sweep.json"
STATE_SCHEMA = "abc-lab/sweep-state"
STATE_LOCK = ".state.lock"  # held for each read-modify-write of sweep.json
RUNS_DIR = "runs"
INTERRUPTED_DIR = "interrupted"
DONE_STATES = ("finished", "failed", "stopped")
MAX_DUPLICATES_IN_A_ROW = 50


# Fault injection for the reliability tests: ABC_LAB_SWEEP_FAULT=<point>[:<n>] makes the sweep
# driver kill itself (SIGKILL) the n-th time it reaches <point>: run_started (its run's
# process is up and the state saved), run_ended (the run's process has exited, its state not
# yet saved), summary (every run done, before the summary is written).
FAULT_ENV = "ABC_LAB_SWEEP_FAULT"
_fault_counts: dict[str, int] = {}


def _fault(point: str) -> None:
    plan = os.environ.get(FAULT_ENV, "")
    name, _, n = plan.partition(":")
    if name != point:
        return
    _fault_counts[point] = _fault_counts.get(point, 0) + 1
    if _fault_counts[point] >= int(n or 1):
        os.kill(os.getpid(), signal.SIGKILL)


class SweepEngine(Protocol):
    """What proposes a sweep's runs. ``runs`` are the entries of the sweep state (name,
    params, state, run_dir, …), oldest first."""

    mode: str  # "offline" | "online": recorded in the state and the summary

    def propose(self, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        """Parameters of the next run, or None when the search has no more."""

    def should_stop(self, runs: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> str | None:
        """A one-line reason to stop the running ``run`` early, or None."""

    def finished(self, run: Mapping[str, Any], record: Mapping[str, Any] | None) -> None:
        """``run`` has ended (finished, failed or stopped) with ``record``."""


def train_command() -> list[str]:
    """How a run is started: `abc-lab train` of the interpreter running the sweep, in its
    script form, which Lightning's DDP launcher can also start for the other ranks."""
    return [sys.executable, "-m", "abc_lab.training.app"]


def _proc_start(pid: int) -> str | None:
    """A process's start time (field 22 of /proc/<pid>/stat): tells a pid apart from reuse."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie has finished


def _alive(pid: int | None, start: str | None) -> bool:
    return bool(pid) and _proc_start(int(pid)) is not None and _proc_start(int(pid)) == start


def _die_with_parent() -> None:  # runs in the child between fork and exec (Linux only)
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def stop_process(proc: subprocess.Popen, grace_s: float = 15.0) -> int:
    """Terminate a run's process group (SIGTERM, then SIGKILL after ``grace_s``)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def dedupe_key(spec: SweepSpec, params: Mapping[str, Any], config_dir: Path | None = None) -> str:
    """Identity of the training a run would do: the run key (abc_lab.runs.key) of its composed
    train config, so fp with M=1 and M=5, which the fp quantizer does not read, are one run."""
    from omegaconf import OmegaConf

    from ..quant import QuantConfig

    cfg = compose_train(spec.run_overrides(params), config_dir)
    data = OmegaConf.to_container(cfg, resolve=False)
    quant = {k: v for k, v in data["quant"].items() if k != "_target_"}
    try:
        fields = QuantConfig(**quant).used_fields()
    except (TypeError, ValueError):  # the run itself will say what is wrong with it
        fields = tuple(quant)
    return json.dumps(derive_key(data, fields), sort_keys=True, default=str)


class SweepLocked(SpecError):
    """Another sweep process works in the same sweep dir."""


@contextlib.contextmanager
def sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on the sweep dir (released by the OS if this process dies)."""
    sweep_dir.mkdir(parents=True, exist_ok=True)
    with open(sweep_dir / ".lock", "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SweepLocked(
                f"another abc-lab sweep is running in {sweep_dir}; wait for it or "
                "pass another --sweep-dir"
            ) from None
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@contextlib.contextmanager
def locked_state(sweep_dir: Path) -> Iterator[dict[str, Any]]:
    """Read-modify-write ``sweep.json`` under the lock every runner and agent of the sweep
    takes; the dict yielded is written back (atomically) when the block ends."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    path = sweep_dir / STATE_NAME
    with open(sweep_dir / STATE_LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            state = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        except ValueError:
            raise SpecError(f"{path} is corrupt; move it away to start the sweep afresh") from None
        yield state
        state["updated_at"] = now_iso()
        write_json_atomic(path, state)


class SweepRunner:
    """Runs the proposals of a sweep engine as ``abc-lab train`` jobs in a sweep dir.

    The runner owns everything but the search: the state file (``sweep.json``), the lock,
    each run's process group, duplicate detection through the run key, early stops, the
    recovery of runs whose driver died, and the summary. The engine (:mod:`.engines`) only
    proposes parameters, judges running runs and hears of finished ones, so the offline
    engine (W&B's open-source one) and the online one (a W&B agent) share all of it.

    ``count`` caps the runs the sweep holds in total (like W&B's ``run_cap``), so rerunning
    the same command after an interruption finishes the same sweep instead of adding runs.
    ``retry_failed`` trains the runs that failed again (e.g. after fixing what failed them).
    """

    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        engine: SweepEngine,
        count: int | None = None,
        console: Console | None = None,
        poll_s: float = 1.0,
        command: Callable[[], list[str]] = train_command,
        stream_output: bool = False,
        config_dir: Path | None = None,
        extra_overrides: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        retry_failed: bool = False,
    ) -> None:
        self.spec = spec
        self.sweep_dir = Path(sweep_dir).resolve()
        self.count = count
        self.console = console or make_console()
        self.poll_s = poll_s
        self.command = command
        self.stream_output = stream_output
        self.config_dir = config_dir
        self.engine = engine
        self.extra_overrides = list(extra_overrides)
        self.env = dict(env or {})
        self.retry_failed = retry_failed
        self.state: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None
        self._stop_reason: str | None = None
        self._own: set[str] = set()  # the runs this runner started (the others: other agents')

    # ---- state -----------------------------------------------------------------------------
    @property
    def runs(self) -> list[dict[str, Any]]:
        return self.state["runs"]

    @contextlib.contextmanager
    def _state_lock(self) -> Iterator[None]:  # also taken by locked_state()
        """A short lock around each read-modify-write of ``sweep.json`` (agents of one sweep
        on one machine or a shared filesystem write it in turns)."""
        self.sweep_dir.mkdir(parents=True, exist_ok=True)
        with open(self.sweep_dir / STATE_LOCK, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def _read_state(self) -> dict[str, Any] | None:
        path = self.sweep_dir / STATE_NAME
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            raise SpecError(f"{path} is corrupt; move it away to start the sweep afresh") from None

    def save(self) -> None:
        """Write this runner's runs into ``sweep.json``; runs other agents wrote stay theirs."""
        with locked_state(self.sweep_dir) as disk:
            mine = {r["name"]: r for r in self.runs if r["name"] in self._own}
            runs = [mine.pop(r.get("name"), r) for r in disk.get("runs", [])]
            runs += list(mine.values())
            dedupe = {**disk.get("dedupe", {}), **self.state.get("dedupe", {})}
            disk.update({k: v for k, v in self.state.items() if k != "runs"})
            disk.update(runs=runs, dedupe=dedupe)
            self.state = disk

    def _load_or_create(self) -> None:
        path = self.sweep_dir / STATE_NAME
        fingerprint = self.spec.fingerprint()
        with self._state_lock():
            state = self._read_state()
        if state:
            if state.get("schema") != STATE_SCHEMA:
                raise SpecError(f"{path} is not an abc-lab sweep state file")
            if state.get("fingerprint") != fingerprint:
                raise SpecError(
                    f"{self.sweep_dir} holds another sweep ({state.get('spec_file')} with "
                    f"overrides {' '.join(state.get('extra') or []) or 'none'}); pass another "
                    "--sweep-dir or run that sweep's own command"
                )
            self.state = state
            if self.engine.mode == "offline":  # one driver: every run of the sweep is its own
                self._own = {r["name"] for r in self.runs}
                self.console.print(f"continuing sweep in {self.sweep_dir}")
            return
        self.state = {
            "schema": STATE_SCHEMA,
            "version": 1,
            "mode": self.engine.mode,
            "spec_file": str(self.spec.path),
            "spec": self.spec.raw,
            "extra": self.spec.extra,
            "fingerprint": fingerprint,
            "created_at": now_iso(),
            "updated_at": now_iso(),
            "runs": [],
        }
        self.save()

    def _recover(self) -> None:
        """Runs left ``running`` by a driver that died: stop strays, keep their partial dir."""
        for run in self.runs:
            if run["state"] not in ("running", "pending"):
                continue
            record = read_record(Path(run["run_dir"])) if run.get("run_dir") else None
            alive = _alive(run.get("pid"), run.get("pid_start"))
            if record is not None and record.get("status") == "finished" and not alive:
                # it finished after the driver's last save: adopt it, never train it twice
                run.update(state="finished", pid=None, pid_start=None, ended_at=now_iso())
                self.save()
                continue
            if alive:
                self.console.print(
                    f"[yellow]{run['name']}: stopping its stray process {run['pid']}[/]"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(run["pid"]), signal.SIGKILL)
                for _ in range(100):
                    if not _alive(run.get("pid"), run.get("pid_start")):
                        break
                    time.sleep(0.1)
            self._interrupted(run, reason=run.get("error") or "its sweep process died")

    def _interrupted(self, run: dict[str, Any], reason: str) -> None:
        """Mark ``run`` interrupted: one with a record continues from its last checkpoint when
        re-run (its record says failed until then); one without starts again, its partial
        directory moved under ``interrupted/``."""
        run_dir = Path(run["run_dir"])
        attempt = {
            "started_at": run.get("started_at"),
            "ended_at": now_iso(),
            "state": "interrupted",
            "reason": reason,
        }
        if read_record(run_dir) is not None:
            mark_record(run_dir, "failed", f"interrupted: {reason}")
            attempt["dir"] = str(run_dir)
            run["resume"] = True
        else:
            self._move_aside(run, attempt)
        run.setdefault("attempts", []).append(attempt)
        run.update(state="interrupted", pid=None, pid_start=None, error=reason)
        self.save()

    def _move_aside(self, run: dict[str, Any], attempt: dict[str, Any]) -> None:
        """Move ``run``'s directory (if any) to ``interrupted/<name>-<attempt>``: its next
        attempt starts from nothing."""
        run_dir = Path(run["run_dir"])
        run.pop("resume", None)
        if not run_dir.exists():
            return
        n = len(run.get("attempts", [])) + 1
        dest = self.sweep_dir / INTERRUPTED_DIR / f"{run['name']}-{n}"
        dest.parent.mkdir(parents=True, exist_ok=True)
        run_dir.rename(dest)
        attempt["dir"] = str(dest)

    def _retry_failed(self) -> None:
        """Failed runs (``retry_failed``) are trained again from the start."""
        for run in self.runs:
            if run["state"] != "failed" or not run.get("run_dir"):
                continue
            attempt = {
                "started_at": run.get("started_at"),
                "ended_at": run.get("ended_at"),
                "state": "failed",
                "reason": run.get("error"),
            }
            self._move_aside(run, attempt)
            run.setdefault("attempts", []).append(attempt)
            run.update(state="interrupted", error=None)
            self.console.print(f"{run['name']} failed before; training it again")
        self.save()

    # ---- running ---------------------------------------------------------------------------
    def _limit(self) -> int | None:
        caps = [c for c in (self.count, self.spec.run_cap) if c is not None]
        return min(caps) if caps else None

    def _n_done(self) -> int:
        return sum(r["state"] in DONE_STATES for r in self.runs)

    def _new_run(self, params: dict[str, Any], name: str | None = None) -> dict[str, Any]:
        name = name or f"run-{len(self.runs):03d}"
        run = {
            "name": name,
            "params": params,
            "state": "pending",
            "run_dir": str(self.sweep_dir / RUNS_DIR / name),
            "overrides": [*self.spec.run_overrides(params), *self.extra_overrides],
            "attempts": [],
        }
        self._own.add(name)
        self.runs.append(run)
        return run

    def _describe(self, run: Mapping[str, Any]) -> str:
        """The run's parameters as overrides, escaped for rich markup."""
        return escape(" ".join(f"{k}={v}" for k, v in run["params"].items()))

    def _execute(self, run: dict[str, Any]) -> None:
        run_dir = Path(run["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.command(), *run["overrides"], f"hydra.run.dir='{run_dir}'"]
        if run.pop("resume", False):
            argv.append("ckpt_path=last")
        env = {**os.environ, **self.env}
        env.setdefault("WANDB_RUN_GROUP", f"sweep-{self.spec.name}")
        self._stop_reason = None
        log_path = run_dir / "sweep_run.log"
        self.console.print(f"[bold]{run['name']}[/] {self._describe(run)}")
        with open(log_path, "ab") as log:
            out = None if self.stream_output else log
            self._proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
                process_group=0,
                preexec_fn=_die_with_parent,
            )
            proc = self._proc
            run.update(
                state="running",
                pid=proc.pid,
                pid_start=_proc_start(proc.pid),
                started_at=now_iso(),
                ended_at=None,
                error=None,
                command=argv,
            )
            self.save()
            _fault("run_started")
            stop_reason = None
            seen = -1
            while proc.poll() is None:
                time.sleep(self.poll_s)
                record = read_record(run_dir)
                n = len(record.get("history") or []) if record else 0
                if n != seen:
                    seen = n
                    stop_reason = self.engine.should_stop(self.runs, run)
                    if stop_reason:
                        stop_process(proc)
                        break
            exitcode = proc.wait()
            stop_reason = stop_reason or self._stop_reason
            _fault("run_ended")
        self._proc = None
        run.update(exitcode=exitcode, ended_at=now_iso(), pid=None, pid_start=None)
        record = read_record(run_dir)
        if stop_reason:
            mark_record(run_dir, "stopped")
            run.update(state="stopped", stop_info=stop_reason)
        elif record is not None and record.get("status") == "finished":  # the record decides
            run["state"] = "finished"
        else:
            run["state"] = "failed"
            error = record.get("error") if record else None
            if not error:
                tail = _last_line(log_path) if not self.stream_output else ""
                error = f"exit code {exitcode}" + (f": {tail}" if tail else "")
                if record is not None and record.get("status") == "running":
                    mark_record(run_dir, "failed", error)
            run["error"] = error
        self.save()
        self.engine.finished(run, read_record(run_dir))
        self._report_run(run, record)

    def _report_run(self, run: Mapping[str, Any], record: Mapping[str, Any] | None) -> None:
        metric = self.spec.metric
        value = ""
        if metric and record:
            v = summary_metrics(record).get(metric["name"])
            if v is None and record.get("history"):
                hist = [h.get(metric["name"]) for h in metric_history(record)]
                v = next((x for x in reversed(hist) if x is not None), None)
            if v is not None:
                value = f" {metric['name']}={v:.4f}"
        style = {"finished": "green", "stopped": "yellow"}.get(run["state"], "red")
        extra = escape(run.get("stop_info") or run.get("error") or "")
        self.console.print(f"  [{style}]{run['state']}[/]{value} {extra}".rstrip())

    def run(self) -> int:
        """Run the sweep to its end (count, run_cap or an exhausted grid); returns an exit code."""
        with sweep_lock(self.sweep_dir):
            self._load_or_create()
            self._recover()
            if self.retry_failed:
                self._retry_failed()
            limit = self._limit()
            in_a_row = 0
            previous = _sigterm_as_interrupt()
            try:
                while True:
                    if limit is not None and self._n_done() >= limit:
                        break
                    pending = next((r for r in self.runs if r["state"] == "interrupted"), None)
                    if pending is not None:
                        how = " from its last checkpoint" if pending.get("resume") else ""
                        self.console.print(f"re-running interrupted {pending['name']}{how}")
                        self._execute(pending)
                        continue
                    params = self.engine.propose(self.runs)
                    if params is None:
                        self.console.print("search space exhausted")
                        break
                    run = self._new_run(params)
                    same = self._duplicate_of(run)
                    if same is not None:
                        run.update(state="duplicate", same_as=same, run_dir=None)
                        self.save()
                        self.console.print(
                            f"[dim]{run['name']} {self._describe(run)}: same "
                            f"training as {same}, not run again[/]"
                        )
                        in_a_row += 1
                        if in_a_row >= MAX_DUPLICATES_IN_A_ROW:
                            self.console.print("only duplicates proposed; stopping")
                            break
                        continue
                    in_a_row = 0
                    self._execute(run)
            except KeyboardInterrupt:
                self._interrupt()
                return 130
            finally:
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)
                self.state["completed"] = not any(r["state"] == "running" for r in self.runs)
                self.save()
            self.finish()
        return 1 if any(r["state"] == "failed" for r in self.runs) else 0

    def stop_current(self, reason: str) -> None:
        """Stop the running run early (e.g. W&B's server decided so), recorded as stopped."""
        self._stop_reason = reason
        if self._proc is not None:
            stop_process(self._proc)

    def run_proposal(self, params: dict[str, Any], name: str) -> int:
        """Run one proposal made outside the runner's loop (a W&B agent's), sharing the sweep
        state with other agents; returns the run's exit code (0 for a duplicate)."""
        self._load_or_create()
        run = self._new_run(params, name)
        same = self._duplicate_of(run)
        if same is not None:
            run.update(state="duplicate", same_as=same, run_dir=None)
            self.save()
            original = next((r for r in self.runs if r["name"] == same), {})
            self.engine.finished(run, read_record(Path(original["run_dir"])) if original else None)
            return 0
        self.save()
        self._execute(run)
        return int(run.get("exitcode") or 0) if run["state"] != "failed" else 1

    def _duplicate_of(self, run: Mapping[str, Any]) -> str | None:
        key = dedupe_key(self.spec, run["params"], self.config_dir)
        run_keys = self.state.setdefault("dedupe", {})
        for name, other in run_keys.items():
            if other == key and name != run["name"]:
                original = next((r for r in self.runs if r["name"] == name), None)
                if original is not None and original["state"] != "duplicate":
                    return name
        run_keys[run["name"]] = key
        return None

    def _interrupt(self) -> None:
        running = next((r for r in self.runs if r["state"] == "running"), None)
        if self._proc is not None:
            stop_process(self._proc, grace_s=5.0)
        if running is not None:
            running.update(pid=None, pid_start=None)
            self._interrupted(running, reason="stopped by the user (Ctrl-C)")
        self.console.print(
            f"[yellow]sweep interrupted; run the same command again to "
            f"continue it in {self.sweep_dir}[/]"
        )

    def rows(self) -> list[JobRow]:
        """Summary rows of the runs that trained (duplicates point at their original)."""
        return rows_of(self.runs)

    def finish(self) -> Path:
        """Write the sweep summary and build the report from the runs' records."""
        _fault("summary")
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        extra = {
            "kind": "sweep",
            "mode": self.engine.mode,
            "spec_file": str(self.spec.path),
            "method": self.spec.method,
            "metric": self.spec.metric,
            "states": counts,
        }
        return summarize(
            self.sweep_dir,
            self.rows(),
            title=f"sweep {self.spec.name} ({self.engine.mode})",
            extra=extra,
            console=self.console,
        )


def rows_of(runs: Sequence[Mapping[str, Any]]) -> list[JobRow]:
    """Summary rows of the runs of a sweep state that trained (not the duplicates)."""
    rows = []
    for run in runs:
        if run["state"] == "duplicate" or not run.get("run_dir"):
            continue
        params = run.get("overrides") or [f"{k}={v}" for k, v in run["params"].items()]
        status = run["state"] if run["state"] in ("stopped", "interrupted") else None
        rows.append(job_row(Path(run["run_dir"]), params, status=status, error=run.get("error")))
    return rows


def _sigterm_as_interrupt() -> Any:
    """Treat SIGTERM (kill, SLURM preemption) like Ctrl-C; returns the previous handler."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread
        return None


def _last_line(path: Path) -> str:
    """The last non-empty line of a log (the one-line error of a failed run)."""
    try:
        lines = [ln.strip() for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


def runs_dir(sweep_dir: Path) -> Path:
    """Where the runs of a sweep keep their records."""
    return Path(sweep_dir) / RUNS_DIR


def records_of(sweep_dir: Path) -> list[Path]:
    """Paths of every run record of a sweep."""
    return sorted(runs_dir(sweep_dir).glob(f"*/{RECORD_NAME}"))


def default_sweep_dir(spec: SweepSpec, extra: Sequence[str] = ()) -> Path:
    """``<multirun dir>/sweeps/<name>-<fingerprint>``: the same command finds the same dir."""
    root = Path("multirun")
    for item in extra:
        if item.startswith("paths.multirun_dir="):
            root = Path(item.split("=", 1)[1].strip("'\""))
    return root / "sweeps" / f"{spec.name}-{spec.fingerprint()}"
