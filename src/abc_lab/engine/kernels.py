"""The compiled bitwise kernels (C++, built with PyTorch's extension tooling at first use).

The build is cached under ``$ABC_LAB_ENGINE_BUILD`` (default ``~/.cache/abc_lab/engine``),
keyed by the source, so later imports load it in well under a second. The instruction set
is chosen at run time from the CPU: AVX-512 VPOPCNTDQ, AVX2 or portable C++;
``ABC_LAB_ENGINE_ISA=portable|avx2|avx512`` forces one (for tests and comparisons). Where
no compiler works, ``native()`` returns None after printing one line, and the engine runs
its simulated (float) path.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import ModuleType

from ..native_build import cache_dir, load_extension

ISAS = {"portable": 0, "avx2": 1, "avx512": 2}
ISA_NAMES = {v: k for k, v in ISAS.items()}
SOURCE = Path(__file__).with_name("csrc") / "binary_conv.cpp"

_state: dict[str, object] = {"module": None, "tried": False, "error": None}


def build_dir() -> Path:
    """Where the compiled extension is cached."""
    return cache_dir("ABC_LAB_ENGINE_BUILD", "engine")


def _build() -> ModuleType:
    # no contraction of a*b + c into one fused multiply-add: the epilogue must round like
    # the reference's separate float32 multiplications and additions
    return load_extension("abc_lab_engine", SOURCE, ["-O3", "-ffp-contract=off"], build_dir())


def native(quiet: bool = False) -> ModuleType | None:
    """The compiled kernels, building them on first use; None (and one line) where impossible."""
    if not _state["tried"]:
        _state["tried"] = True
        if os.environ.get("ABC_LAB_ENGINE_NATIVE", "1") == "0":
            _state["error"] = "disabled by ABC_LAB_ENGINE_NATIVE=0"
        else:
            try:
                _state["module"] = _build()
            except Exception as err:  # no compiler, no headers, failed build
                line = (str(err).strip().splitlines() or [type(err).__name__])[-1][:160]
                _state["error"] = line
        if _state["module"] is None and not quiet:
            print(
                f"abc-lab engine: bitwise kernels unavailable ({_state['error']}); "
                "running the simulated float path",
                file=sys.stderr,
            )
    return _state["module"]  # type: ignore[return-value]


def native_error() -> str | None:
    """Why the kernels are unavailable (None when they loaded or were never tried)."""
    return _state["error"]  # type: ignore[return-value]


def isa() -> int:
    """The instruction set the kernels use: ``ABC_LAB_ENGINE_ISA`` or the CPU's best."""
    mod = native(quiet=True)
    best = int(mod.cpu_isa()) if mod is not None else 0
    forced = os.environ.get("ABC_LAB_ENGINE_ISA")
    if forced:
        if forced not in ISAS:
            raise ValueError(f"ABC_LAB_ENGINE_ISA must be one of {', '.join(ISAS)}, got {forced!r}")
        if ISAS[forced] > best:
            raise ValueError(
                f"ABC_LAB_ENGINE_ISA={forced}: this CPU offers {ISA_NAMES[best]} at best"
            )
        return ISAS[forced]
    return best


def isa_name() -> str:
    return ISA_NAMES[isa()] if native(quiet=True) is not None else "simulated"
