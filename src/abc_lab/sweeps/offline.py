"""Run a W&B sweep definition without a server, with W&B's open-source engine (``sweeps``).

Each proposed run is an ``abc-lab train`` subprocess in ``<sweep dir>/runs/<name>``; its
metric is fed back to the engine from the run record (``results.json``), whose history is
polled while it trains so hyperband can stop it early (the subprocess is terminated and
the record marked ``stopped``). The state lives in ``<sweep dir>/sweep.json``, saved after
every change: running the same command again continues the sweep, and a run that was
interrupted (its driver died) is re-run with the same parameters, its partial directory
kept under ``interrupted/`` — never counted as done.
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
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from ..console import make_console
from ..record_format import RECORD_NAME, now_iso, write_json_atomic
from .records import mark_record, metric_history, read_record, summary_metrics
from .spec import SpecError, SweepSpec, compose_train
from .summary import JobRow, job_row, summarize

STATE_NAME = "sweep.json"
STATE_SCHEMA = "abc-lab/sweep-state"
RUNS_DIR = "runs"
INTERRUPTED_DIR = "interrupted"
DONE_STATES = ("finished", "failed", "stopped")
# Quantizer fields that only the ABC quantizer reads (see abc_lab.quant.registry): for any
# other quantizer two runs differing only in these are the same run.
ABC_ONLY_FIELDS = (
    "M",
    "N",
    "shifts",
    "alpha_scope",
    "trainable_shifts",
    "act_shift_center",
    "act_shift_spread",
    "beta_init",
)
MAX_DUPLICATES_IN_A_ROW = 50
ENGINE_MISSING = (
    "offline sweeps need W&B's sweep engine, the optional extra 'sweeps': "
    "pip install -e '.[sweeps]' in a checkout (make install does it), or run with --online"
)


def import_engine() -> Any:
    """The ``sweeps`` package (W&B's engine), or a one-sentence SpecError naming the fix."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its pydantic v1-style config warns on import
            import sweeps
    except ImportError:
        raise SpecError(ENGINE_MISSING) from None
    if not hasattr(sweeps, "next_run"):  # the repo's sweeps/ folder seen as a namespace package
        raise SpecError(ENGINE_MISSING)
    return sweeps


def train_command() -> list[str]:
    """How a run is started: `abc-lab train` of the interpreter running the sweep, in its
    script form, which Lightning's DDP launcher can also start for the other ranks."""
    return [sys.executable, "-m", "abc_lab.training.app"]


def _plain(value: Any) -> Any:
    """Engine values (maybe numpy scalars) as JSON-able Python values."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


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
    """Identity of the training a run would do: its composed train config, without the ABC-only
    quantizer fields when the quantizer is not ABC (fp with M=1 and M=5 are the same run)."""
    from omegaconf import OmegaConf

    cfg = compose_train(spec.run_overrides(params), config_dir)
    data = OmegaConf.to_container(cfg, resolve=False)
    quant = data.get("quant") if isinstance(data, dict) else None
    if isinstance(quant, dict) and quant.get("name") != "abc":
        for name in ABC_ONLY_FIELDS:
            quant.pop(name, None)
    return json.dumps(data, sort_keys=True, default=str)


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


class OfflineSweep:
    """One offline sweep: proposes, runs and early-stops ``abc-lab train`` jobs in a sweep dir.

    ``count`` caps the runs the sweep holds in total (like W&B's ``run_cap``), so rerunning
    the same command after an interruption finishes the same sweep instead of adding runs.
    """

    def __init__(
        self,
        spec: SweepSpec,
        sweep_dir: Path,
        count: int | None = None,
        console: Console | None = None,
        poll_s: float = 1.0,
        command: Callable[[], list[str]] = train_command,
        stream_output: bool = False,
        config_dir: Path | None = None,
    ) -> None:
        self.spec = spec
        self.sweep_dir = Path(sweep_dir).resolve()
        self.count = count
        self.console = console or make_console()
        self.poll_s = poll_s
        self.command = command
        self.stream_output = stream_output
        self.config_dir = config_dir
        self.engine = import_engine()
        self.engine_config = self.engine.SweepConfig(spec.engine_config())
        self.state: dict[str, Any] = {}
        self._proc: subprocess.Popen | None = None

    # ---- state -----------------------------------------------------------------------------
    @property
    def runs(self) -> list[dict[str, Any]]:
        return self.state["runs"]

    def save(self) -> None:
        self.state["updated_at"] = now_iso()
        write_json_atomic(self.sweep_dir / STATE_NAME, self.state)

    def _load_or_create(self) -> None:
        path = self.sweep_dir / STATE_NAME
        fingerprint = self.spec.fingerprint()
        if path.is_file():
            try:
                state = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                raise SpecError(
                    f"{path} is corrupt; move it away to start the sweep afresh"
                ) from None
            if state.get("schema") != STATE_SCHEMA:
                raise SpecError(f"{path} is not an abc-lab sweep state file")
            if state.get("fingerprint") != fingerprint:
                raise SpecError(
                    f"{self.sweep_dir} holds another sweep ({state.get('spec_file')} with "
                    f"overrides {' '.join(state.get('extra') or []) or 'none'}); pass another "
                    "--sweep-dir or run that sweep's own command"
                )
            self.state = state
            self.console.print(f"continuing sweep in {self.sweep_dir}")
            return
        self.state = {
            "schema": STATE_SCHEMA,
            "version": 1,
            "mode": "offline",
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
            if _alive(run.get("pid"), run.get("pid_start")):
                self.console.print(
                    f"[yellow]{run['name']}: stopping its stray process {run['pid']}[/]"
                )
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(int(run["pid"]), signal.SIGKILL)
                for _ in range(100):
                    if not _alive(run.get("pid"), run.get("pid_start")):
                        break
                    time.sleep(0.1)
            self._set_aside(run, reason=run.get("error") or "its sweep process died")

    def _set_aside(self, run: dict[str, Any], reason: str) -> None:
        """Mark ``run`` interrupted and move its partial directory under ``interrupted/``."""
        run_dir = Path(run["run_dir"])
        attempt = {
            "started_at": run.get("started_at"),
            "ended_at": now_iso(),
            "state": "interrupted",
            "reason": reason,
        }
        if run_dir.exists():
            n = len(run.get("attempts", [])) + 1
            dest = self.sweep_dir / INTERRUPTED_DIR / f"{run['name']}-{n}"
            dest.parent.mkdir(parents=True, exist_ok=True)
            run_dir.rename(dest)
            attempt["dir"] = str(dest)
            if read_record(dest) is not None:
                mark_record(dest, "failed", f"interrupted: {reason}")
        run.setdefault("attempts", []).append(attempt)
        run.update(state="interrupted", pid=None, pid_start=None, error=reason)
        self.save()

    # ---- engine ----------------------------------------------------------------------------
    def _sweep_run(self, run: Mapping[str, Any]) -> Any:
        """The engine's view of one run, built from its record."""
        engine = self.engine
        source = run
        if run["state"] == "duplicate":
            source = next((r for r in self.runs if r["name"] == run.get("same_as")), run)
        record = read_record(Path(source["run_dir"])) if source.get("run_dir") else None
        state = {
            "finished": engine.RunState.finished,
            "stopped": engine.RunState.finished,  # its partial metric is real, not imputed
            "failed": engine.RunState.failed,
            "running": engine.RunState.running,
        }.get(source["state"], engine.RunState.pending)
        return engine.SweepRun(
            name=run["name"],
            state=state,
            config={k: {"value": v} for k, v in run["params"].items()},
            history=metric_history(record) if record else [],
            summary_metrics=summary_metrics(record) if record else {},
            stopped=source["state"] == "stopped",
        )

    def _engine_runs(self) -> list[Any]:
        return [self._sweep_run(r) for r in self.runs if r["state"] != "interrupted"]

    def _propose(self) -> dict[str, Any] | None:
        proposal = self.engine.next_run(self.engine_config, self._engine_runs())
        if proposal is None:
            return None
        return {k: _plain(v["value"]) for k, v in proposal.config.items()}

    def _should_stop(self, run: Mapping[str, Any]) -> str | None:
        """Hyperband's verdict on the running ``run``: a one-line reason, or None."""
        if not self.spec.early_terminate:
            return None
        runs = self._engine_runs()
        to_stop = self.engine.stop_runs(self.engine_config, runs)
        for r in to_stop:
            if r.name == run["name"]:
                info = (r.early_terminate_info or {}).get("lines") or []
                return (info[-1] if info else "hyperband").strip()
        return None

    # ---- running ---------------------------------------------------------------------------
    def _limit(self) -> int | None:
        caps = [c for c in (self.count, self.spec.run_cap) if c is not None]
        return min(caps) if caps else None

    def _n_done(self) -> int:
        return sum(r["state"] in DONE_STATES for r in self.runs)

    def _new_run(self, params: dict[str, Any]) -> dict[str, Any]:
        name = f"run-{len(self.runs):03d}"
        run = {
            "name": name,
            "params": params,
            "state": "pending",
            "run_dir": str(self.sweep_dir / RUNS_DIR / name),
            "overrides": self.spec.run_overrides(params),
            "attempts": [],
        }
        self.runs.append(run)
        return run

    def _describe(self, run: Mapping[str, Any]) -> str:
        """The run's parameters as overrides, escaped for rich markup."""
        return escape(" ".join(f"{k}={v}" for k, v in run["params"].items()))

    def _execute(self, run: dict[str, Any]) -> None:
        run_dir = Path(run["run_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        argv = [*self.command(), *run["overrides"], f"hydra.run.dir='{run_dir}'"]
        env = dict(os.environ)
        env.setdefault("WANDB_RUN_GROUP", f"sweep-{self.spec.name}")
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
            stop_reason = None
            seen = -1
            while proc.poll() is None:
                time.sleep(self.poll_s)
                record = read_record(run_dir)
                n = len(record.get("history") or []) if record else 0
                if n != seen:
                    seen = n
                    stop_reason = self._should_stop(run)
                    if stop_reason:
                        stop_process(proc)
                        break
            exitcode = proc.wait()
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
            limit = self._limit()
            in_a_row = 0
            previous = _sigterm_as_interrupt()
            try:
                while True:
                    if limit is not None and self._n_done() >= limit:
                        break
                    pending = next((r for r in self.runs if r["state"] == "interrupted"), None)
                    if pending is not None:
                        self.console.print(f"re-running interrupted {pending['name']}")
                        self._execute(pending)
                        continue
                    params = self._propose()
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
        trained = [r for r in self.runs if r["state"] in DONE_STATES]
        return 1 if trained and all(r["state"] == "failed" for r in trained) else 0

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
            self._set_aside(running, reason="stopped by the user (Ctrl-C)")
        self.console.print(
            f"[yellow]sweep interrupted; run the same command again to "
            f"continue it in {self.sweep_dir}[/]"
        )

    def rows(self) -> list[JobRow]:
        """Summary rows of the runs that trained (duplicates point at their original)."""
        return rows_of(self.runs)

    def finish(self) -> Path:
        """Write the sweep summary and build the report from the runs' records."""
        counts: dict[str, int] = {}
        for r in self.runs:
            counts[r["state"]] = counts.get(r["state"], 0) + 1
        extra = {
            "kind": "sweep",
            "mode": "offline",
            "spec_file": str(self.spec.path),
            "method": self.spec.method,
            "metric": self.spec.metric,
            "states": counts,
        }
        return summarize(
            self.sweep_dir,
            self.rows(),
            title=f"sweep {self.spec.name} (offline)",
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
