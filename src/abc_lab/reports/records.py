"""Find, load and validate run records (``results.json``, docs/run-record.md).

Reports read these records and nothing else. Every file that cannot be used (corrupt JSON,
a foreign file without the run-record schema tag, a record missing fields the report needs)
becomes a :class:`Problem` naming its path; loading never raises for bad input.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..record_format import RECORD_NAME, SCHEMA, STATUSES, VERSION

SUPPORTED_VERSIONS = (VERSION,)

# Key fields that describe the training setup: a binary run and its baseline share them all.
SETUP_FIELDS = (
    "model",
    "data",
    "epochs",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "warmup_epochs",
    "batch_size",
    "augment",
    "train_subset",
    "label_smoothing",
    "precision",
    "gradient_clip_val",
)
# Key fields that describe the quantizer (they may differ between a run and its baseline).
QUANT_FIELDS = (
    "quant",
    "label",
    "M",
    "N",
    "alpha_scope",
    "trainable_shifts",
    "act_shift_center",
    "act_shift_spread",
)
# Setup fields added to the key later: older records lack them and count as these values.
KEY_DEFAULTS = {"precision": "32-true", "gradient_clip_val": None}
REQUIRED_KEY_FIELDS = (*(f for f in SETUP_FIELDS if f not in KEY_DEFAULTS), "quant", "seed")


@dataclass(frozen=True)
class Problem:
    """A file or input path that could not be used, and why (one line)."""

    path: Path
    reason: str


@dataclass(frozen=True)
class Run:
    """One valid run record, with typed accessors for what reports use."""

    path: Path
    record: Mapping[str, Any]

    @property
    def status(self) -> str:
        return self.record["status"]

    @property
    def key(self) -> Mapping[str, Any]:
        return self.record["key"]

    @property
    def seed(self) -> Any:
        return self.key.get("seed")

    @property
    def quant(self) -> str:
        return str(self.key["quant"])

    @property
    def label(self) -> str:
        return str(self.key.get("label") or self.quant)

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
    def summary(self) -> Mapping[str, Any]:
        return self.record.get("summary") or {}

    @property
    def history(self) -> list[Mapping[str, Any]]:
        return list(self.record.get("history") or [])

    @property
    def quant_params(self) -> Mapping[str, Mapping[str, Any]]:
        return self.record.get("quant_params") or {}

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
    return float(value)


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
    if data.get("version") not in SUPPORTED_VERSIONS:
        return f"unsupported run-record version {data.get('version')!r} (this reader knows 1)"
    status = data.get("status")
    if status not in STATUSES:
        return f"invalid status {status!r} (expected one of {', '.join(STATUSES)})"
    key = data.get("key")
    if not isinstance(key, dict):
        return 'invalid record: "key" is missing or not an object'
    missing = [name for name in REQUIRED_KEY_FIELDS if name not in key]
    if missing:
        return f"invalid record: key lacks {', '.join(missing)}"
    for name in ("metrics", "summary", "throughput", "quant_params"):
        if data.get(name) is not None and not isinstance(data[name], dict):
            return f'invalid record: "{name}" is not an object'
    history = data.get("history")
    if history is not None and not (
        isinstance(history, list) and all(isinstance(h, dict) for h in history)
    ):
        return 'invalid record: "history" is not a list of objects'
    bad = [k for k, v in (data.get("summary") or {}).items() if not _is_number_or_none(v)]
    if bad:
        return f"invalid record: summary.{bad[0]} is not a number"
    for layer, params in (data.get("quant_params") or {}).items():
        if not isinstance(params, dict) or not all(
            isinstance(v, list) and all(_is_number_or_none(x) for x in v)
            for v in params.values()
            if v is not None
        ):
            return f"invalid record: quant_params.{layer} is not an object of number lists"
    return None


def _is_number_or_none(value: Any) -> bool:
    return value is None or (isinstance(value, int | float) and not isinstance(value, bool))


def load_record(path: Path) -> Run | Problem:
    """Read one record file; a :class:`Problem` when it is unreadable, corrupt or foreign."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return Problem(path, f"unreadable: {exc.__class__.__name__}: {exc}")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return Problem(path, f"corrupt JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    reason = validate_record(data)
    if reason is not None:
        return Problem(path, reason)
    return Run(Path(path), data)


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
