"""Offline sweeps: W&B's open-source engine (``sweeps``) proposes and early-stops runs,
without a server; the runner (:mod:`.runner`) runs them, so a sweep is resumable by
running the same command again.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from .metrics import metric_history, read_record, summary_metrics
from .runner import SweepRunner, default_sweep_dir, records_of, runs_dir, train_command
from .spec import SpecError, SweepSpec

__all__ = ["LocalEngine", "OfflineSweep", "default_sweep_dir", "records_of", "runs_dir"]

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


def _plain(value: Any) -> Any:
    """Engine values (maybe numpy scalars) as JSON-able Python values."""
    if hasattr(value, "item") and not isinstance(value, list | dict | str):
        return value.item()
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class LocalEngine:
    """W&B's open-source sweep engine (grid, random, bayes; hyperband early stopping), fed
    with the runs' metrics from their records."""

    mode = "offline"

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec
        self.sweeps = import_engine()
        self.config = self.sweeps.SweepConfig(spec.engine_config())

    def sweep_run(self, run: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]) -> Any:
        """The engine's view of one run, built from its record (a duplicate shows the run it
        repeats)."""
        engine = self.sweeps
        source = run
        if run["state"] == "duplicate":
            source = next((r for r in runs if r["name"] == run.get("same_as")), run)
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

    def engine_runs(self, runs: Sequence[Mapping[str, Any]]) -> list[Any]:
        return [self.sweep_run(r, runs) for r in runs if r["state"] != "interrupted"]

    def propose(self, runs: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
        proposal = self.sweeps.next_run(self.config, self.engine_runs(runs))
        if proposal is None:
            return None
        return {k: _plain(v["value"]) for k, v in proposal.config.items()}

    def should_stop(self, runs: Sequence[Mapping[str, Any]], run: Mapping[str, Any]) -> str | None:
        """Hyperband's verdict on the running ``run``: a one-line reason, or None."""
        if not self.spec.early_terminate:
            return None
        for r in self.sweeps.stop_runs(self.config, self.engine_runs(runs)):
            if r.name == run["name"]:
                info = (r.early_terminate_info or {}).get("lines") or []
                return (info[-1] if info else "hyperband").strip()
        return None

    def finished(self, run: Mapping[str, Any], record: Mapping[str, Any] | None) -> None:
        """Nothing to tell: the engine reads every run's record at the next proposal."""


def OfflineSweep(  # noqa: N802 - a constructor by use
    spec: SweepSpec,
    sweep_dir: Path,
    count: int | None = None,
    console: Console | None = None,
    **options: Any,
) -> SweepRunner:
    """The runner with W&B's open engine: an offline, resumable sweep in ``sweep_dir``."""
    options.setdefault("command", train_command)
    return SweepRunner(spec, sweep_dir, LocalEngine(spec), count, console, **options)
