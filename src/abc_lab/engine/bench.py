"""Inference benchmark: the bitwise engine against torch float32 and bfloat16.

Every configuration is built first, then timed in interleaved rounds in one process (one
forward of each per round), so drifting machine load affects all alike; results are medians
and ratios to torch on the same architecture. Per layer: each distinct binary convolution
shape of the network, timed on its own. Synthetic weights and inputs: only shapes matter.
torch float32 runs in both memory layouts (NCHW and channels-last) in the same rounds, and
the faster one is the baseline: the engine is compared with torch at its best.
"""

from __future__ import annotations

import copy
import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..models import build_model
from ..quant import QuantConfig, parse_quant_spec, quantize_model
from . import kernels
from .export import pack_model
from .runtime import EngineModel, PackedConv2d, build_engine

SCHEMA = "abc-lab/inference-bench"
RUN_FILE = "inference.json"
RUN_SCHEMA = "abc-lab/inference"
MODELS = {
    "resnet20": {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28},
    "resnet18": {"name": "resnet18", "num_classes": 1000, "in_channels": 3, "input_size": 224},
}
CONFIGS = ["fp", "xnor", "abc:1:1", "abc:3:1", "abc:3:3", "abc:5:5"]


@dataclass
class Timing:
    model: str
    scope: str  # "network" or the layer's shape, e.g. "256->256 k3 s1 14x14"
    config: str
    batch: int
    threads: int
    engine_ms: float
    fp32_ms: float
    bf16_ms: float | None
    engine_min_ms: float = 0.0  # fastest round: the cost with the least interference
    fp32_min_ms: float = 0.0
    fp32_layout: str = "nchw"  # the faster of torch's float32 layouts: "nchw" / "channels_last"

    @property
    def vs_fp32(self) -> float:
        return self.fp32_ms / self.engine_ms

    @property
    def vs_bf16(self) -> float | None:
        return None if self.bf16_ms is None else self.bf16_ms / self.engine_ms

    @property
    def vs_fp32_min(self) -> float:
        return self.fp32_min_ms / self.engine_min_ms if self.engine_min_ms else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self), "speedup_fp32": self.vs_fp32, "speedup_bf16": self.vs_bf16,
            "speedup_fp32_min": self.vs_fp32_min,
        }  # fmt: skip


def engine_for(float_model: nn.Module, spec: dict[str, Any], quant: QuantConfig) -> EngineModel:
    """The native engine for ``float_model`` quantized with ``quant`` (in memory, no file)."""
    model = quantize_model(copy.deepcopy(float_model), quant).eval()
    tensors, meta = pack_model(model, spec, quant)
    return build_engine(tensors, meta, "native")


FP32_LAYOUTS = ("nchw", "channels_last")


@dataclass
class TorchBaseline:
    """torch's side of one interleaved timing: the faster float32 layout and bfloat16."""

    fp32: float  # median seconds
    fp32_min: float  # fastest round
    layout: str
    bf16: float | None


def _against_torch(
    module: nn.Module, x: torch.Tensor, bf16: bool, others: list[Callable[[], object]], rounds: int
) -> tuple[TorchBaseline, list[float], list[float]]:
    """``others`` timed in interleaved rounds beside torch's ``module(x)`` in float32 (NCHW and
    channels-last) and, with ``bf16``, bfloat16: torch's baseline, then the medians and
    fastest rounds of ``others``."""
    cl = copy.deepcopy(module).to(memory_format=torch.channels_last)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    fns: list[Callable[[], object]] = [lambda: module(x), lambda: cl(x_cl)]
    if bf16:
        m16, x16 = copy.deepcopy(module).to(torch.bfloat16), x.to(torch.bfloat16)
        fns.append(lambda: m16(x16))
    med = _interleaved(fns + others, rounds)
    mins = _interleaved.mins  # type: ignore[attr-defined]
    i = 0 if med[0] <= med[1] else 1
    base = TorchBaseline(med[i], mins[i], FP32_LAYOUTS[i], med[2] if bf16 else None)
    return base, med[len(fns) :], mins[len(fns) :]


def _timing(
    model: str,
    scope: str,
    config: str,
    batch: int,
    threads: int,
    engine_s: float,
    engine_min_s: float,
    base: TorchBaseline,
) -> Timing:
    """One row: the engine's median and fastest round against torch's baseline (ms)."""
    return Timing(
        model, scope, config, batch, threads, 1e3 * engine_s, 1e3 * base.fp32,
        None if base.bf16 is None else 1e3 * base.bf16, 1e3 * engine_min_s,
        1e3 * base.fp32_min, base.layout,
    )  # fmt: skip


def _interleaved(fns: list[Callable[[], object]], rounds: int, warmup: int = 1) -> list[float]:
    """Median seconds of each function over ``rounds`` interleaved rounds (the fastest round
    of each is kept in ``_interleaved.mins``). Each round starts one function later, so each
    runs after every other equally often: a sub-millisecond layer timed right after a float
    convolution finds its caches cold, and a fixed order would charge that to one of them."""
    with torch.no_grad():
        for fn in fns:
            for _ in range(warmup):
                fn()
        times: list[list[float]] = [[] for _ in fns]
        for r in range(rounds):
            for k in range(len(fns)):
                i = (r + k) % len(fns)
                t0 = time.perf_counter()
                fns[i]()
                times[i].append(time.perf_counter() - t0)
    _interleaved.mins = [min(t) for t in times]  # type: ignore[attr-defined]
    return [statistics.median(t) for t in times]


def _layer_inputs(engine: EngineModel, x: torch.Tensor) -> dict[str, tuple[PackedConv2d, Any]]:
    """First layer of each distinct binary conv shape, with the input it sees."""
    seen: dict[str, tuple[PackedConv2d, Any]] = {}
    hooks = []
    for _, layer in engine.packed_layers():
        if isinstance(layer, PackedConv2d) and layer.native:

            def hook(mod, inp, out, layer=layer):
                co, ci, k, _ = layer.entry["shape"]
                h, w = inp[0].shape[-2:]
                key = f"{ci}->{co} k{k} s{layer.stride[0]} {h}x{w}"
                seen.setdefault(key, (layer, inp[0].detach().clone()))

            hooks.append(layer.register_forward_hook(hook))
    with torch.no_grad():
        engine(x)
    for h in hooks:
        h.remove()
    return seen


def bench_model(
    model: str,
    configs: list[str],
    batch: int,
    threads: int,
    rounds: int,
    layers: bool = True,
    bf16: bool = True,
) -> list[Timing]:
    """Network (and per-layer) timings of every config at one batch size and thread count."""
    spec = MODELS[model]
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    float_model = build_model(**spec).eval()
    x = torch.randn(batch, spec["in_channels"], spec["input_size"], spec["input_size"])
    engines = {c: engine_for(float_model, spec, parse_quant_spec(c)) for c in configs}
    base, med, mins = _against_torch(
        float_model, x, bf16, [lambda e=e: e(x) for e in engines.values()], rounds
    )
    out = [_timing(model, "network", c, batch, threads, t, lo, base)
           for c, t, lo in zip(configs, med, mins, strict=True)]  # fmt: skip
    if not layers:
        return out
    binary = [c for c in configs if c != "fp"]
    per_config = {c: _layer_inputs(engines[c], x) for c in binary}
    for key in per_config[binary[0]] if binary else []:
        layer, inp = per_config[binary[0]][key]
        co, ci, k, _ = layer.entry["shape"]
        conv = nn.Conv2d(ci, co, k, layer.stride, layer.padding, bias=False).eval()
        layers_of = [lambda c=c, key=key: per_config[c][key][0](per_config[c][key][1])
                     for c in binary]  # fmt: skip
        base, med, mins = _against_torch(conv, inp, bf16, layers_of, rounds)
        out += [_timing(model, key, c, batch, threads, t, lo, base)
                for c, t, lo in zip(binary, med, mins, strict=True)]  # fmt: skip
    return out


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": torch.get_num_threads(),
        "isa": kernels.isa_name(),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def write_json(path: str | Path, data: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)
    return path


def bench_run_latency(
    engine: EngineModel, batches: list[int], threads: list[int], rounds: int
) -> list[dict[str, Any]]:
    """Whole-network latency of a loaded model against torch fp32 / bf16 of its architecture."""
    spec = engine.meta["model"]
    float_model = build_model(**spec).eval()
    rows = []
    for t in threads:
        torch.set_num_threads(t)
        for b in batches:
            x = torch.randn(b, *engine.meta["input_shape"])
            base, (eng,), (eng_lo,) = _against_torch(
                float_model, x, True, [lambda x=x: engine(x)], rounds
            )
            rows.append({
                "batch": b, "threads": t, "engine_ms": 1e3 * eng, "fp32_ms": 1e3 * base.fp32,
                "bf16_ms": 1e3 * base.bf16, "speedup_fp32": base.fp32 / eng,
                "speedup_bf16": base.bf16 / eng, "engine_min_ms": 1e3 * eng_lo,
                "fp32_min_ms": 1e3 * base.fp32_min, "speedup_fp32_min": base.fp32_min / eng_lo,
                "fp32_layout": base.layout,
            })  # fmt: skip
    return rows


def update_run_file(run_dir: str | Path, key: str, value: Any, meta: dict[str, Any]) -> Path:
    """Set ``key`` in ``<run_dir>/inference.json`` (created with the model's label if new)."""
    path = Path(run_dir) / RUN_FILE
    try:
        data = json.loads(path.read_text())
        if data.get("schema") != RUN_SCHEMA:
            data = {}
    except (OSError, ValueError):
        data = {}
    data.update(schema=RUN_SCHEMA, version=1, label=meta.get("label"), model=meta.get("model"))
    data["machine"] = machine()
    data[key] = value
    return write_json(path, data)
