"""Building a C++ source with PyTorch's extension tooling once, cached on disk.

The cache key is the source, the torch version, the flags and, for ``-march=native``
builds, the CPU's instruction-set flags, so a shared home directory never hands one
machine a build for another.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
from pathlib import Path
from types import ModuleType


def cache_dir(env_var: str, name: str) -> Path:
    """Where a build is cached: ``$env_var`` if set, else ``~/.cache/abc_lab/<name>``."""
    root = os.environ.get(env_var)
    return Path(root) if root else Path.home() / ".cache" / "abc_lab" / name


def cpu_signature() -> str:
    """The CPU's feature flags (Linux: /proc/cpuinfo), or the platform's processor name."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(("flags", "Features")):
                return line
    except OSError:
        pass
    return f"{platform.machine()} {platform.processor()}"


def load_extension(prefix: str, source: Path, cflags: list[str], folder: Path) -> ModuleType:
    """Compile ``source`` (once per key) into ``folder/<prefix>_<key>`` and import it.

    Raises whatever the toolchain raises when no compiler or headers are available.
    """
    import torch

    # the toolchain probe warns about CUDA on CPU-only machines: not our concern
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    from torch.utils import cpp_extension

    blob = source.read_bytes() + torch.__version__.encode() + " ".join(cflags).encode()
    if "-march=native" in cflags:
        blob += cpu_signature().encode()
    name = f"{prefix}_{hashlib.sha256(blob).hexdigest()[:12]}"
    build = folder / name
    build.mkdir(parents=True, exist_ok=True)
    if not any(build.glob(f"{name}*.so")) and not any(build.glob(f"{name}*.pyd")):
        print(f"abc-lab: compiling {source.name} (first use, about a minute; kept in {build})",
              file=sys.stderr)  # fmt: skip
    openmp = ["-fopenmp"] if sys.platform.startswith("linux") else []
    return cpp_extension.load(
        name=name,
        sources=[str(source)],
        extra_cflags=[*cflags, *openmp],
        extra_ldflags=openmp,
        build_directory=str(build),
        verbose=False,
    )
