"""The run record (`results.json`, see docs/run-record.md) and the callback that keeps it.

The record is rewritten atomically at start, after every validation epoch and at the
end, so a crashed or killed job still leaves what it had; sweeps and reports read only
these files.
"""

from __future__ import annotations

import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import lightning.pytorch as pl

from ..runs.format import RECORD_NAME, SCHEMA, VERSION, now_iso, write_record


def library_versions() -> dict[str, str]:
    import hydra
    import torch
    import torchvision

    from .. import __version__

    versions = {
        "abc_lab": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "lightning": pl.__version__,
        "hydra": hydra.__version__,
    }
    try:
        import wandb

        versions["wandb"] = wandb.__version__
    except ImportError:  # pragma: no cover - wandb is a dependency
        pass
    return versions


def git_info(where: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the source checkout, or nulls outside a git repository."""
    where = where or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5
        )
        if commit.returncode != 0:
            return {"commit": None, "dirty": None}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where, capture_output=True, text=True, timeout=5,
        )  # fmt: skip
        return {"commit": commit.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _metric(metrics: dict, name: str) -> float | None:
    value = metrics.get(name)
    return None if value is None else float(value)


class RunRecorder(pl.Callback):
    """Keeps ``results.json`` up to date through a Lightning run.

    Its history and timing travel in checkpoints (``state_dict``), so a resumed run keeps
    the epochs it had already done. Training throughput leaves out the first
    ``warmup_batches`` of each process (kernel compilation, allocator warm-up).
    """

    def __init__(self, run_dir: Path, base: dict[str, Any], warmup_batches: int = 5) -> None:
        self.warmup_batches = warmup_batches
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / RECORD_NAME
        self.record: dict[str, Any] = {
            "schema": SCHEMA,
            "version": VERSION,
            "status": "running",
            "error": None,
            "run_dir": str(Path(run_dir).resolve()),
            "started_at": now_iso(),
            "finished_at": None,
            "wall_time_s": 0.0,
            "epochs_done": 0,
            "metrics": {"val": None, "best_val": None, "test": None},
            "history": [],
            "quant_params": {},
            "quant_params_init": {},
            "throughput": {"train_samples_per_s": None},
            "checkpoints": {"last": None, "best": None},
            **base,
        }
        self.accept_state = True  # restore history from a checkpoint (resume), not when testing
        self._t0 = time.perf_counter()
        self._elapsed_before = 0.0
        self._elapsed_floor = 0.0  # time a resumed run had spent before (its record's)
        self._train_time = 0.0
        self._train_samples = 0
        self._batch_t0 = 0.0
        self._batches_seen = 0
        self._loss_sum = 0.0
        self._loss_n = 0

    # ------------------------------------------------------------------ persistence
    def write(self) -> None:
        self.record["wall_time_s"] = round(self._elapsed_before + time.perf_counter() - self._t0, 2)
        if self._train_time > 0:
            rate = self._train_samples / self._train_time
            self.record["throughput"]["train_samples_per_s"] = round(rate, 2)
        write_record(self.run_dir, self.record)

    def finish(self, status: str, error: str | None = None, **extra: Any) -> None:
        self.record.update(status=status, error=error, finished_at=now_iso(), **extra)
        self.write()

    def continue_from(self, previous: dict[str, Any]) -> None:
        """Resume the record an interrupted job left in the run directory: keep its start
        time and count the wall time it had recorded (or, if later, the checkpoint's)."""
        self.record["started_at"] = previous.get("started_at") or self.record["started_at"]
        self._elapsed_floor = float(previous.get("wall_time_s") or 0.0)
        self._elapsed_before = max(self._elapsed_before, self._elapsed_floor)
        self._t0 = time.perf_counter()

    def state_dict(self) -> dict[str, Any]:
        return {
            "history": self.record["history"],
            "best_val": self.record["metrics"]["best_val"],
            "val": self.record["metrics"]["val"],
            "epochs_done": self.record["epochs_done"],
            "elapsed": self._elapsed_before + time.perf_counter() - self._t0,
            "train_time": self._train_time,
            "train_samples": self._train_samples,
            "quant_params_init": self.record.get("quant_params_init") or {},
            "act_calibration": (self.record.get("init") or {}).get("act_calibration"),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if not self.accept_state:  # testing a checkpoint must not rewind the record
            return
        self.record["history"] = list(state.get("history", []))
        self.record["metrics"]["best_val"] = state.get("best_val")
        self.record["metrics"]["val"] = state.get("val")
        self.record["epochs_done"] = int(state.get("epochs_done", 0))
        self._elapsed_before = max(float(state.get("elapsed", 0.0)), self._elapsed_floor)
        self._t0 = time.perf_counter()
        self._train_time = float(state.get("train_time", 0.0))
        self._train_samples = int(state.get("train_samples", 0))
        if state.get("quant_params_init"):
            self.record["quant_params_init"] = state["quant_params_init"]
        if state.get("act_calibration") and isinstance(self.record.get("init"), dict):
            # a resumed run is not calibrated again; its record keeps the first start's fit
            self.record["init"]["act_calibration"] = state["act_calibration"]

    # ------------------------------------------------------------------ hooks
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            self.record["status"] = "running"
            if not self.record.get("quant_params_init"):
                from .module import quant_parameters

                self.record["quant_params_init"] = quant_parameters(pl_module.model)
            self.write()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self._batch_t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._batches_seen += 1
        if self._batches_seen > self.warmup_batches:  # skip compilation and allocator warm-up
            self._train_time += time.perf_counter() - self._batch_t0
            self._train_samples += len(batch[1])
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum += float(loss)
            self._loss_n += 1

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        val = {
            "acc1": _metric(m, "val/acc1"),
            "acc5": _metric(m, "val/acc5"),
            "loss": _metric(m, "val/loss"),
        }
        epoch = trainer.current_epoch
        entry = {
            "epoch": epoch,
            "step": trainer.global_step,
            "val_acc1": val["acc1"],
            "val_acc5": val["acc5"],
            "val_loss": val["loss"],
            "train_loss": self._loss_sum / self._loss_n if self._loss_n else None,
            "lr": trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None,
            "time_s": round(self._elapsed_before + time.perf_counter() - self._t0, 2),
        }
        self._loss_sum, self._loss_n = 0.0, 0
        history = [h for h in self.record["history"] if h["epoch"] != epoch]
        self.record["history"] = history + [entry]
        self.record["metrics"]["val"] = val
        best = self.record["metrics"]["best_val"]
        if val["acc1"] is not None and (best is None or val["acc1"] > best["acc1"]):
            self.record["metrics"]["best_val"] = {"acc1": val["acc1"], "epoch": epoch}
        self.record["epochs_done"] = epoch + 1
        from .module import quant_parameters

        self.record["quant_params"] = quant_parameters(pl_module.model)
        self.write()

    def on_test_end(self, trainer: pl.Trainer, pl_module) -> None:
        if not trainer.is_global_zero:
            return
        m = trainer.callback_metrics
        self.record["metrics"]["test"] = {
            "acc1": _metric(m, "test/acc1"),
            "acc5": _metric(m, "test/acc5"),
            "loss": _metric(m, "test/loss"),
        }
        self.write()

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if trainer.is_global_zero:
            self.finish("failed", error=f"{type(exception).__name__}: {exception}")
