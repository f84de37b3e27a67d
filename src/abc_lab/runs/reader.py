"""The one reader of run records (``results.json``, docs/run-record.md).

Training, sweeps, reports and init-check read records through it. Every file that cannot be
used (unreadable, corrupt JSON, a foreign file without the schema tag, a record of another
version or with fields of the wrong type) becomes a :class:`Problem` naming its path; reading
never raises for bad input. NaN and infinities read as null (missing), as the writer writes
them. Version-1 records are upgraded on reading (:mod:`abc_lab.runs.legacy`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import key as run_key
from .format import RECORD_NAME, SCHEMA, STATUSES, SUPPORTED_VERSIONS
from .legacy import upgrade


@dataclass(frozen=True)
class Problem:
    """A file or input path that could not be used, and why (one line)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Run:
    """One valid run record (version 2, older ones upgraded), with typed accessors."""

    path: Path
    record: Mapping[str, Any]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def key(self) -> Mapping[str, Any]:
        """The run key: dotted config fields that can change a result (runs.key)."""
        return self.record["key"]

    @property
    def identity(self) -> Mapping[str, Any]:
        """The quantizer's identity: name, label, family, weight and activation bases."""
        return self.record.get("quant") or {}

    @property
    def seed(self) -> Any:
        return self.key.get("seed")

    @property
    def quant(self) -> str:
        return str(self.identity.get("name") or self.key.get("quant.name"))

    @property
    def label(self) -> str:
        return str(self.identity.get("label") or self.quant)

    @property
    def is_fp(self) -> bool:
        """Full precision: no binary weights and no binary activations."""
        return self.identity.get("weight_bases") == 0 and self.identity.get("activation_bases") == 0

    @property
    def multi_base(self) -> bool:
        """An ABC-family quantizer: M weight and N activation bases (heat maps over M, N)."""
        return self.identity.get("family") == "multi-base"

    @property
    def M(self) -> int | None:
        return self.identity.get("weight_bases") if self.multi_base else None

    @property
    def N(self) -> int | None:
        return self.identity.get("activation_bases") if self.multi_base else None

    @property
    def model(self) -> str:
        return str(self.key.get("model.name"))

    @property
    def data(self) -> str:
        return str(self.key.get("data.name"))

    @property
    def epochs(self) -> Any:
        return self.key.get("trainer.max_epochs")

    @property
    def error(self) -> str | None:
        return self.record.get("error")

    @property
    def run_dir(self) -> str:
        return str(self.record.get("run_dir") or self.path.parent)

    @property
    def init_from(self) -> str | None:
        return self.key.get("init_from") or None

    @property
    def init_source(self) -> Any:
        """What the start checkpoint was: the source run's label and setup when the record
        holds them, else only whether there was one (older records)."""
        source = (self.record.get("init") or {}).get("source")
        return source if source else bool(self.init_from)

    @property
    def fp_origin(self) -> str | None:
        """The fp configuration (serialised variant) at the start of this run's ``init_from``
        chain: the source run's when it is fp, else what the source recorded as its own."""
        source = (self.record.get("init") or {}).get("source")
        if not isinstance(source, dict):
            return None
        for candidate in (source.get("fp_variant"), source.get("variant")):
            if run_key.is_fp_variant(candidate):
                return candidate
        return None

    @property
    def teacher_source(self) -> Any:
        return (self.record.get("distill") or {}).get("teacher_source")

    @property
    def setup(self) -> tuple:
        """The setup a binary run shares with its fp baseline: that of the fp configuration it
        was started from, when its key differs from it only in the quantizer, the seed and
        the training recipe (runs.key.fine_tune_setup); else runs.key.setup_of."""
        if not self.is_fp and self.fp_origin is not None:
            origin = run_key.fine_tune_setup(self.key, self.fp_origin)
            if origin is not None:
                return origin
        return run_key.setup_of(self.key)

    @property
    def variant(self) -> tuple:
        """What runs averaged as seeds of one configuration share (runs.key.variant_of)."""
        return run_key.variant_of(self.key, self.init_source, self.teacher_source)

    @property
    def overrides(self) -> list[str] | None:
        """The command-line overrides the run was started with (None in older records)."""
        value = self.record.get("overrides")
        return list(value) if isinstance(value, list) else None

    @property
    def summary(self) -> Mapping[str, Any]:
        return self.record.get("summary") or {}

    @property
    def history(self) -> list[Mapping[str, Any]]:
        return list(self.record.get("history") or [])

    @property
    def quant_params(self) -> Mapping[str, Mapping[str, Any]]:
        return self.record.get("quant_params") or {}

    @property
    def quant_params_init(self) -> Mapping[str, Mapping[str, Any]]:
        """The quantizer parameters at the start of training (v and β per ABC layer)."""
        return self.record.get("quant_params_init") or {}

    @property
    def num_classes(self) -> int | None:
        value = self.key.get("model.num_classes")
        return value if isinstance(value, int) else None

    @property
    def wall_time_s(self) -> float | None:
        return _number(self.record.get("wall_time_s"))

    @property
    def train_samples_per_s(self) -> float | None:
        value = _number((self.record.get("throughput") or {}).get("train_samples_per_s"))
        return value if value else None

    def metric(self, split: str, name: str) -> float | None:
        """``metrics[split][name]`` (e.g. ``("test", "acc1")``) or None when absent."""
        block = (self.record.get("metrics") or {}).get(split) or {}
        return _number(block.get(name))


@dataclass
class LoadResult:
    """Valid runs (any status) and the problems met while finding and reading records."""

    runs: list[Run] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    files_seen: int = 0

    def with_status(self, *statuses: str) -> list[Run]:
        return [run for run in self.runs if run.status in statuses]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond float range
        return None
    return number if math.isfinite(number) else None


def find_record_files(paths: Iterable[Path]) -> tuple[list[Path], list[Problem]]:
    """``results.json`` files under run or sweep directories (searched recursively).

    A path may also name a record file directly. Missing paths become problems; a file found
    twice (overlapping inputs) is returned once.
    """
    files: list[Path] = []
    problems: list[Problem] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found = [path]
        elif path.is_dir():
            found = sorted(p for p in path.rglob(RECORD_NAME) if p.is_file())
            if not found:
                problems.append(Problem(path, f"no {RECORD_NAME} found under this directory"))
        else:
            problems.append(Problem(path, "path does not exist"))
            continue
        for file in found:
            resolved = file.resolve()
            if resolved not in seen:
                seen.add(resolved)
                files.append(file)
    return files, problems


def validate_record(data: Any) -> str | None:
    """Why ``data`` is not a usable run record, or None when it is."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        return f'foreign file: no "schema": "{SCHEMA}"'
    version = data.get("version")
    if isinstance(version, bool) or version not in SUPPORTED_VERSIONS:
        known = ", ".join(str(v) for v in SUPPORTED_VERSIONS)
        return f"unsupported run-record version {version!r} (this reader knows {known})"
    status = data.get("status")
    if status not in STATUSES:
        return f"invalid status {status!r} (expected one of {', '.join(STATUSES)})"
    key = data.get("key")
    if not isinstance(key, dict):
        return 'invalid record: "key" is missing or not an object'
    required = V1_REQUIRED if version == 1 else V2_REQUIRED
    missing = [name for name in required if name not in key]
    if missing:
        return f"invalid record: key lacks {', '.join(missing)}"
    if version == 2 and not isinstance(data.get("quant"), dict):
        return 'invalid record: "quant" (the quantizer identity) is missing or not an object'
    for name in ("metrics", "summary", "throughput", "quant_params", "quant_params_init"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            return f'invalid record: "{name}" is not an object'
    for split, block in (data.get("metrics") or {}).items():
        if block is not None and not isinstance(block, dict):
            return f"invalid record: metrics.{split} is not an object"
        bad = [k for k, v in (block or {}).items() if not _is_number_or_none(v)]
        if bad:
            return f"invalid record: metrics.{split}.{bad[0]} is not a number"
    for name in ("wall_time_s", "epochs_done"):
        if not _is_number_or_none(data.get(name)):
            return f"invalid record: {name} is not a number"
    history = data.get("history")
    if history is not None and not (
        isinstance(history, list) and all(isinstance(h, dict) for h in history)
    ):
        return 'invalid record: "history" is not a list of objects'
    for entry in history or []:
        bad = [k for k, v in entry.items() if not _is_number_or_none(v)]
        if bad:
            return f"invalid record: history entry field {bad[0]} is not a number"
    bad = [k for k, v in (data.get("summary") or {}).items() if not _is_number_or_none(v)]
    if bad:
        return f"invalid record: summary.{bad[0]} is not a number"
    for block in ("quant_params", "quant_params_init"):
        for layer, params in (data.get(block) or {}).items():
            if not isinstance(params, dict) or not all(
                isinstance(v, list) and all(_is_number_or_none(x) for x in v)
                for v in params.values()
                if v is not None
            ):
                return f"invalid record: {block}.{layer} is not an object of number lists"
    return None


def _is_number_or_none(value: Any) -> bool:
    """None, a float, or an integer that fits 64 bits (larger ones are corruption)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 2**63
    return value is None or isinstance(value, float)


def _finite_or_none(text: str) -> float | None:
    value = float(text)
    return value if math.isfinite(value) else None


# Key fields every record of a version must hold for its runs to be grouped and matched.
V1_REQUIRED = (
    *("model", "data", "epochs", "optimizer", "lr", "weight_decay", "schedule"),
    *("warmup_epochs", "batch_size", "augment", "train_subset", "label_smoothing"),
    *("quant", "seed"),
)
V2_REQUIRED = ("model.name", "data.name", "quant.name", "seed")


def load_record(path: Path) -> Run | Problem:
    """Read one record file; a :class:`Problem` when it is unreadable, corrupt or foreign."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(path, f"unreadable: {exc.__class__.__name__}: {exc}")
    try:
        # NaN, Infinity and overflowing literals (1e999) read as null: not measured
        data = json.loads(text, parse_constant=lambda _: None, parse_float=_finite_or_none)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if hasattr(exc, "lineno") else ""
        return Problem(path, f"corrupt JSON: {getattr(exc, 'msg', exc)}{where}")
    reason = validate_record(data)
    if reason is not None:
        return Problem(path, reason)
    if data["version"] == 1:
        try:
            data = upgrade(data)
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            return Problem(path, f"invalid version-1 record: cannot read its key ({exc})")
    return Run(Path(path), data)


def read_run(path: Path) -> Run | None:
    """The run record in run directory (or record file) ``path``, or None when it is absent
    or unusable (callers that must say why use :func:`load_record`)."""
    path = Path(path)
    loaded = load_record(path / RECORD_NAME if path.is_dir() else path)
    return loaded if isinstance(loaded, Run) else None


def load_runs(paths: Iterable[Path]) -> LoadResult:
    """Load every record under ``paths``, collecting problems instead of raising."""
    files, problems = find_record_files(paths)
    result = LoadResult(problems=problems, files_seen=len(files))
    for file in files:
        loaded = load_record(file)
        if isinstance(loaded, Problem):
            result.problems.append(loaded)
        else:
            result.runs.append(loaded)
    return result


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the values that are present (None when none is)."""
    present = [v for v in values if v is not None]
    return sum(present) / len(present) if present else None
