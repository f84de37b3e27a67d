"""Run a sweep definition on the W&B server: ``wandb.sweep`` creates it, ``wandb.agent`` runs
its proposals here, each as the same ``abc-lab train`` subprocess the offline engine uses.

The child process inherits the agent's ``WANDB_RUN_ID`` / ``WANDB_SWEEP_ID``, so the
training's W&B logger joins the sweep run and the server sees its metrics (logged online:
``WANDB_MODE=online``). The same files also run with plain ``wandb sweep`` + ``wandb agent``.
"""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from ..console import make_console
from ..runs import now_iso
from .job_summary import summarize
from .metrics import summary_metrics
from .runner import STATE_NAME, STATE_SCHEMA, SweepRunner, locked_state, rows_of, train_command
from .spec import SpecError, SweepSpec

PARAM_PATH_ENV = "WANDB_SWEEP_PARAM_PATH"


def read_params(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The run's parameters from the agent's config file (``{name: {value: v}}``)."""
    import yaml

    data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return {
        k: v["value"]
        for k, v in data.items()
        if isinstance(v, Mapping) and "value" in v and not str(k).startswith(("_", "wandb"))
    }


def online_overrides(spec: SweepSpec, config_dir: Path | None = None) -> list[str]:
    """Make the run's W&B logger log live (its config default is offline) when it has one."""
    from .spec import compose_train

    cfg = compose_train([*spec.fixed_overrides, *spec.extra], config_dir)
    logger = cfg.get("logger") or {}
    return ["logger.wandb.offline=false"] if "wandb" in logger else []


class AgentEngine:
    """The W&B server as engine: its agent proposes the parameters of each run (one per
    call of the agent's function) and stops runs early itself (it sends SIGTERM); finished
    runs report every sweep metric of their record back to the agent's W&B run."""

    mode = "online"

    def __init__(self, params: dict[str, Any]) -> None:
        self.params: dict[str, Any] | None = params

    def propose(self, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        params, self.params = self.params, None
        return params

    def should_stop(self, runs: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> str | None:
        return None  # the server decides, and says so with SIGTERM

    def finished(self, run: Mapping[str, Any], record: Mapping[str, Any] | None) -> None:
        config = {"duplicate_of": run["same_as"]} if run.get("same_as") else None
        _push_summary(record or {}, config=config)


def agent_job(
    spec: SweepSpec,
    sweep_dir: Path,
    command: Callable[[], list[str]] = train_command,
    config_dir: Path | None = None,
) -> int:
    """One run proposed by the W&B agent (called in the agent's run process); returns the
    exit code of its ``abc-lab train``. The sweep runner runs it as it runs offline
    proposals (process group, shared state, duplicates): a run that would repeat an earlier
    run of this sweep dir (e.g. fp at another M) does not train, and its W&B run gets the
    earlier run's metrics."""
    run_id = os.environ.get("WANDB_RUN_ID", "run")
    params = read_params(os.environ[PARAM_PATH_ENV])
    runner = SweepRunner(
        spec, sweep_dir, AgentEngine(params), command=command, stream_output=True,
        config_dir=config_dir, extra_overrides=online_overrides(spec, config_dir),
        env={"WANDB_MODE": "online"},
    )  # fmt: skip
    previous = signal.signal(
        signal.SIGTERM, lambda *_: runner.stop_current("stopped by the W&B sweep")
    )
    try:
        return runner.run_proposal(params, run_id)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _push_summary(record: Mapping[str, Any], config: Mapping[str, Any] | None = None) -> None:
    """Put every sweep metric of the record (best_val/acc1 too, which the training does not
    log to W&B itself) into the summary of the agent's W&B run, so any sweep metric works."""
    import wandb

    try:  # WANDB_RUN_ID / WANDB_SWEEP_ID from the agent name the run to resume
        run = wandb.init(resume="allow", config=dict(config or {}))
        run.summary.update(summary_metrics(record))
        run.finish()
    except Exception as exc:
        make_console(stderr=True).print(f"[yellow]W&B summary not updated: {_one_line(exc)}[/]")


def run_online(
    spec: SweepSpec,
    sweep_dir: Path | None,
    count: int | None,
    project: str,
    entity: str | None = None,
    sweep_id: str | None = None,
    console: Console | None = None,
    command: Callable[[], list[str]] = train_command,
) -> int:
    """Create the sweep on W&B (or join ``sweep_id``) and run an agent for ``count`` runs."""
    import wandb

    console = console or make_console()
    if sweep_id is None:
        try:
            sweep_id = wandb.sweep(spec.engine_config(), project=project, entity=entity)
        except Exception as exc:
            raise SpecError(
                f"could not create the sweep on W&B ({_one_line(exc)}); log in with "
                "`wandb login` or run it offline"
            ) from None
    if not sweep_id:
        raise SpecError("W&B did not create the sweep; log in with `wandb login` or run offline")
    sweep_dir = Path(sweep_dir or Path("multirun") / "sweeps" / f"{spec.name}-{sweep_id}")
    with locked_state(sweep_dir) as state:
        if state and state.get("fingerprint") != spec.fingerprint():
            raise SpecError(f"{sweep_dir} holds another sweep; pass another --sweep-dir")
        state.update(
            {
                k: v
                for k, v in {
                    "schema": STATE_SCHEMA,
                    "version": 1,
                    "mode": "online",
                    "sweep_id": sweep_id,
                    "project": project,
                    "entity": entity,
                    "spec_file": str(spec.path),
                    "spec": spec.raw,
                    "extra": spec.extra,
                    "fingerprint": spec.fingerprint(),
                    "created_at": now_iso(),
                }.items()
                if k not in state
            }
        )
        state.setdefault("runs", [])
    console.print(
        f"W&B sweep {entity + '/' if entity else ''}{project}/{sweep_id}; runs in {sweep_dir}"
    )
    try:
        wandb.agent(
            sweep_id,
            function=lambda: agent_job(spec, sweep_dir, command),
            count=count,
            project=project,
            entity=entity,
        )
    except KeyboardInterrupt:
        console.print("[yellow]agent stopped; the sweep goes on on the server[/]")
    state = json.loads((sweep_dir / STATE_NAME).read_text(encoding="utf-8"))
    summarize(
        sweep_dir,
        rows_of(state["runs"]),
        title=f"sweep {spec.name} (online {sweep_id})",
        extra={"kind": "sweep", "mode": "online", "sweep_id": sweep_id},
        console=console,
    )
    return 0


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
