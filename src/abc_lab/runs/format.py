"""The run-record file (docs/run-record.md): schema tag, version, file name, timestamps and
the one writer. Records are replaced atomically, so a reader never sees half a file, and
non-finite numbers (a diverged loss) are written as null, the one spelling every reader
understands."""

from __future__ import annotations

import json
import math
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "abc-lab/run-record"
VERSION = 2
SUPPORTED_VERSIONS = (1, 2)
RECORD_NAME = "results.json"
STATUSES = ("running", "finished", "failed", "stopped")


def now_iso() -> str:
    """The current UTC time as ISO 8601 seconds, the format of the records' timestamps."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def finite(data: Any) -> Any:
    """``data`` with every NaN or infinity replaced by None (JSON has no spelling for them)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [finite(v) for v in data]
    return data


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(finite(data), fh, indent=2, default=str, allow_nan=False)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_record(run_dir: Path, record: dict[str, Any]) -> Path:
    """Write ``record`` as ``<run_dir>/results.json`` (atomically); returns the file's path.

    The one writer of run records: training, the train entry (start-up failures) and sweeps
    (early-stopped runs) all go through it."""
    record.setdefault("schema", SCHEMA)
    record.setdefault("version", VERSION)
    path = Path(run_dir) / RECORD_NAME
    write_json_atomic(path, record)
    return path
