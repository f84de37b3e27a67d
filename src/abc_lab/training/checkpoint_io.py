"""Checkpoint files written atomically: the whole checkpoint goes to a temporary file beside
the target, is flushed to disk, then renamed over it. A write that fails half-way (a full
disk, a kill) leaves the previous checkpoint as it was, loadable."""

from __future__ import annotations

import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from .faults import checkpoint_write_fault, die

CHUNK = 1 << 20


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO with a temporary file and a rename."""

    def __init__(self) -> None:
        super().__init__()
        self._die_at = checkpoint_write_fault()
        self._writes = 0

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: str | Path, storage_options: Any = None
    ) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        data = buffer.getbuffer()
        self._writes += 1
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as fh:
                for start in range(0, len(data), CHUNK):
                    write_chunk(fh, data[start : start + CHUNK])
                    if self._die_at == self._writes and start >= len(data) // 2 - CHUNK:
                        die()
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def write_chunk(fh: Any, chunk: memoryview) -> None:
    """One write (a seam where tests simulate a full disk)."""
    fh.write(chunk)
