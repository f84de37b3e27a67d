"""Reader for IDX files (the MNIST / Fashion-MNIST format), gzipped or not.

The header alone (``read_idx_header``) is enough to validate a file cheaply; ``read_idx``
decodes the whole array with numpy in one go.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path
from typing import BinaryIO

import numpy as np

_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


class IDXFormatError(ValueError):
    """The file is not a readable IDX file."""


def _open(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")  # type: ignore[return-value]


def _parse_header(head: bytes, path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    if len(head) < 4 or head[0] != 0 or head[1] != 0 or head[2] not in _DTYPES:
        raise IDXFormatError(f"{path} is not an IDX file (bad magic number)")
    ndim = head[3]
    if len(head) < 4 + 4 * ndim:
        raise IDXFormatError(f"{path} is truncated (header shorter than {ndim} dimensions)")
    shape = struct.unpack(f">{ndim}I", head[4 : 4 + 4 * ndim])
    return _DTYPES[head[2]], shape


def read_idx_header(path: str | Path) -> tuple[np.dtype, tuple[int, ...]]:
    """Dtype and shape stored in an IDX file, reading only its first bytes."""
    path = Path(path)
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) == 4:
                head += f.read(4 * head[3])
    except (OSError, EOFError) as err:
        raise IDXFormatError(f"{path} cannot be read: {err}") from err
    return _parse_header(head, path)


def read_idx(path: str | Path) -> np.ndarray:
    """The whole array of an IDX file (native byte order, writable)."""
    path = Path(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise IDXFormatError(f"{path} cannot be read: {err}") from err
    dtype, shape = _parse_header(raw[:1024], path)  # at most 255 dimensions
    offset = 4 + 4 * len(shape)
    count = int(np.prod(shape, dtype=np.int64))
    if len(raw) - offset != count * dtype.itemsize:
        raise IDXFormatError(
            f"{path} holds {len(raw) - offset} data bytes but its header {shape} needs "
            f"{count * dtype.itemsize}"
        )
    array = np.frombuffer(bytearray(raw), dtype=dtype, count=count, offset=offset)
    return array.reshape(shape).astype(dtype.newbyteorder("="), copy=False)
