"""The packed model file: safetensors tensors plus one JSON metadata entry.

Tensors are named after the model's state_dict keys. A binary layer ``L`` stores
``L.weight_bits`` (uint8, its M bases packed as in :mod:`abc_lab.engine.packing`) and
``L.alpha`` instead of ``L.weight``, plus its activation parameters (``L.input_quantizer.v``
and ``.beta`` for ABC). Float layers, BatchNorm parameters and running statistics are
stored as float tensors. The metadata (key ``abc_lab``) holds the format name and version,
the model and quantizer config, the input shape, one entry per quantized layer, the source
run and checkpoint hash, the model summary's packed-weight figure and a SHA-256 over all
tensors, so a damaged file is refused instead of producing wrong numbers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

FORMAT = "abc-lab/packed-model"
VERSION = 1
META_KEY = "abc_lab"
SUFFIX = ".safetensors"


class FormatError(ValueError):
    """A file that is not a readable packed model; the message names the file and the fix."""


def tensors_sha256(tensors: dict[str, Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes of every tensor, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def payload_bytes(tensors: dict[str, Tensor]) -> int:
    """Bytes of tensor data (the file adds a JSON header to these)."""
    return sum(t.numel() * t.element_size() for t in tensors.values())


def save_packed(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> Path:
    """Write ``tensors`` and ``meta`` (with format, version and checksum added) to ``path``."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {
        "format": FORMAT,
        "version": VERSION,
        **meta,
        "payload_bytes": payload_bytes(tensors),
        "sha256": tensors_sha256(tensors),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    save_file(tensors, str(tmp), metadata={META_KEY: json.dumps(meta)})
    tmp.replace(path)
    return path


def load_packed(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Read and verify a packed model file; FormatError (one line) for anything else."""
    from safetensors.torch import load_file, safe_open

    p = Path(path)
    how = "export one with: abc-lab export <run dir>"
    if not p.is_file():
        raise FormatError(f"model file '{path}' does not exist; {how}")
    try:
        with safe_open(str(p), framework="pt") as fh:
            header = fh.metadata() or {}
        tensors = load_file(str(p))
    except Exception as err:  # safetensors raises its own error types for damaged files
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
        raise FormatError(
            f"model file '{path}' is not a readable safetensors file ({reason}); it is "
            f"truncated, corrupt or of another format; {how}"
        ) from err
    try:
        meta = json.loads(header[META_KEY])
        assert isinstance(meta, dict)
    except (KeyError, ValueError, AssertionError) as err:
        raise FormatError(
            f"model file '{path}' is a safetensors file but not an abc-lab packed model "
            f"(no '{META_KEY}' metadata); {how}"
        ) from err
    if meta.get("format") != FORMAT:
        raise FormatError(f"model file '{path}' has format {meta.get('format')!r}, not {FORMAT}")
    if meta.get("version") != VERSION:
        raise FormatError(
            f"model file '{path}' is format version {meta.get('version')!r}; this abc-lab reads "
            f"version {VERSION}: export it again with this version"
        )
    if tensors_sha256(tensors) != meta.get("sha256"):
        raise FormatError(
            f"model file '{path}' is corrupt (its tensors do not match the checksum in its "
            f"metadata); {how}"
        )
    return tensors, meta
