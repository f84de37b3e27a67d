"""Training-step benchmark: quantized configurations timed side by side against fp.

All configurations are built first and then timed in interleaved rounds (one step of
each per round), so drifting machine load affects them alike; the figure reported is
each configuration's median step time divided by fp's. Synthetic inputs: only shapes
matter for speed. ``count_ops`` counts what PyTorch's profiler records in one step
(operators, and on a GPU kernel launches), the measure of per-step overhead.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from .models import build_model
from .quant import QuantConfig, fused_norm, quantize_model, set_reference_mode
from .quant import functional as QF


@dataclass
class BenchCase:
    label: str
    quant: QuantConfig
    reference: bool = False
    compile: bool = False
    fuse_norm: bool = True  # False: BatchNorm and binarisation as separate operations
    segment_sums: str = "auto"  # how the batched weight fold sums over layers (see QF)
    kernel: str | None = None  # activation kernels for this case (QF.set_kernel); None: as set


@dataclass
class BenchResult:
    label: str
    median_s: float
    ratio: float
    steps: int


@dataclass
class OpCount:
    """Profiler records of one training step: ``events`` every record (operators with their
    nested calls, autograd nodes, compiled regions), ``operators`` the aten operator calls
    among them, ``launches`` GPU kernel launches (0 on CPU)."""

    label: str
    events: int
    operators: int
    launches: int


def default_cases(
    reference: list[tuple[int, int]] | None = None,
    baselines: bool = True,
    compile_model: bool = False,
    gpu: bool = False,
) -> list[BenchCase]:
    """fp, fused abc (1,1), (3,3), (5,5), abc(3,3) with one speed-up switched off (on a CPU
    the BatchNorm fusion; on a GPU the scan-based segment sums, and the compiled activation
    kernels, also for xnor), the xnor / bnn / bwn baselines, the literal M·N path for
    ``reference`` pairs and, with ``compile_model``, fp and abc(3,3) as whole compiled
    models (``torch.compile``)."""
    cases = [BenchCase("fp", QuantConfig(name="fp"))]
    for m, n in [(1, 1), (3, 3), (5, 5)]:
        cases.append(BenchCase(f"abc({m},{n}) fused", QuantConfig(name="abc", M=m, N=n)))
    abc33 = QuantConfig(name="abc", M=3, N=3)
    if gpu:  # the BatchNorm fusion runs on a CPU only
        cases.append(
            BenchCase("abc(3,3) fused, weight sums scattered", abc33, segment_sums="scatter")
        )
        # each torch.compile'd call costs host time, which a small GPU step is bound by
        cases.append(BenchCase("abc(3,3), eager activations", abc33, kernel="eager"))
    else:
        cases.append(BenchCase("abc(3,3) fused, BatchNorm apart", abc33, fuse_norm=False))
    if baselines:
        for name in ("xnor", "bnn", "bwn"):
            cases.append(BenchCase(name, QuantConfig(name=name)))
        if gpu:
            xnor = QuantConfig(name="xnor")
            cases.append(BenchCase("xnor, eager activations", xnor, kernel="eager"))
    if compile_model:
        cases.append(BenchCase("fp, compiled model", QuantConfig(name="fp"), compile=True))
        cases.append(
            BenchCase("abc(3,3), compiled model", QuantConfig(name="abc", M=3, N=3), compile=True)
        )
    for m, n in reference if reference is not None else [(3, 3), (5, 5)]:
        cases.append(
            BenchCase(f"abc({m},{n}) reference M·N", QuantConfig(name="abc", M=m, N=n), True)
        )
    return cases


def _step_fn(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, case: BenchCase
) -> Callable[[], None]:
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        kernel = QF.kernel_name()
        if case.kernel is not None:
            QF.set_kernel(case.kernel)
        try:
            with fused_norm.enabled(case.fuse_norm), QF.segment_sums(case.segment_sums):
                opt.zero_grad(set_to_none=True)
                loss_fn(model(x), y).backward()
                opt.step()
        finally:
            QF.set_kernel(kernel)

    return step


def _build(case: BenchCase, model: str, in_channels: int, input_size: int, device: str):
    net = build_model(model, num_classes=10, in_channels=in_channels, input_size=input_size)
    net = quantize_model(net, case.quant).to(device).train()
    if case.reference:
        set_reference_mode(net, True)
    if case.compile:
        # CUDA graphs on a GPU: the whole step's kernels replayed with one launch
        net.compile(mode="reduce-overhead" if device.startswith("cuda") else None)
    return net


def _inputs(batch_size: int, in_channels: int, input_size: int, device: str):
    torch.manual_seed(0)
    x = torch.randn(batch_size, in_channels, input_size, input_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    return x, y


def run_benchmark(
    cases: list[BenchCase],
    model: str = "resnet20",
    input_size: int = 28,
    in_channels: int = 1,
    batch_size: int = 128,
    rounds: int = 10,
    warmup: int = 2,
    reference_rounds: int = 3,
    device: str = "cpu",
    progress=None,
) -> list[BenchResult]:
    """Median training-step time of each case and its ratio to the first case (fp)."""
    x, y = _inputs(batch_size, in_channels, input_size, device)
    steps = [
        _step_fn(_build(case, model, in_channels, input_size, device), x, y, case) for case in cases
    ]

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for case, step in zip(cases, steps, strict=True):
        for _ in range(warmup + (3 if case.compile else 0)):  # compiled: record graphs first
            step()
    times: list[list[float]] = [[] for _ in cases]
    for r in range(rounds):
        for i, (case, step) in enumerate(zip(cases, steps, strict=True)):
            if case.reference and r >= reference_rounds:
                continue
            sync()
            t0 = time.perf_counter()
            step()
            sync()
            times[i].append(time.perf_counter() - t0)
        if progress is not None:
            progress(r + 1, rounds)
    medians = [statistics.median(t) for t in times]
    return [
        BenchResult(case.label, med, med / medians[0], len(t))
        for case, med, t in zip(cases, medians, times, strict=True)
    ]


def count_ops(
    cases: list[BenchCase],
    model: str = "resnet20",
    input_size: int = 28,
    in_channels: int = 1,
    batch_size: int = 128,
    device: str = "cpu",
    warmup: int = 2,
) -> list[OpCount]:
    """Profiler records of one training step (after ``warmup`` steps) for each case."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "5")  # no profiler start/stop lines on stderr
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU]
    if device.startswith("cuda"):
        activities.append(ProfilerActivity.CUDA)
    x, y = _inputs(batch_size, in_channels, input_size, device)
    counts = []
    for case in cases:
        step = _step_fn(_build(case, model, in_channels, input_size, device), x, y, case)
        for _ in range(warmup + (3 if case.compile else 0)):
            step()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        with profile(activities=activities) as prof:
            step()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
        events = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CPU]
        launches = sum(
            1
            for e in events
            if e.name in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel",
                          "cuLaunchKernelEx", "cudaGraphLaunch")
        )  # fmt: skip
        operators = sum(1 for e in events if e.name.startswith("aten::"))
        counts.append(OpCount(case.label, len(events), operators, launches))
    return counts
