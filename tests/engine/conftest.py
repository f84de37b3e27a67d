"""Shared fixtures of the engine tests: the compiled kernels and the instruction sets."""

from __future__ import annotations

import shutil

import pytest

from abc_lab.engine import kernels


def _compiler() -> bool:
    return any(shutil.which(c) for c in ("c++", "g++", "clang++"))


@pytest.fixture(scope="session")
def native():
    """The compiled kernels; a skip only where this machine has no C++ compiler."""
    if not _compiler():
        pytest.skip("no C++ compiler on this machine: the bitwise kernels cannot be built")
    mod = kernels.native(quiet=True)
    assert mod is not None, f"kernels failed to build: {kernels.native_error()}"
    return mod


@pytest.fixture(scope="session")
def isas(native) -> list[str]:
    """Every instruction set this CPU runs (portable, avx2, avx512 as available)."""
    best = int(native.cpu_isa())
    return [name for name, level in kernels.ISAS.items() if level <= best]
