"""The run-record file format (docs/run-record.md), shared by its writer (training) and its
readers (sweeps, reports): schema tag, version, file name, timestamps, atomic writes."""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "abc-lab/run-record"
VERSION = 1
RECORD_NAME = "results.json"
STATUSES = ("running", "finished", "failed", "stopped")


def now_iso() -> str:
    """The current UTC time as ISO 8601 seconds, the format of the records' timestamps."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to ``path`` via a temporary file and a rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2, default=str)
            fh.write("\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
