"""Training-step benchmark: quantized configurations timed side by side against fp.

All configurations are built first and then timed in interleaved rounds (one step of
each per round), so drifting machine load affects them alike; the figure reported is
each configuration's median step time divided by fp's. Synthetic inputs: only shapes
matter for speed.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from .models import build_model
from .quant import QuantConfig, quantize_model, set_reference_mode


@dataclass
class BenchCase:
    label: str
    quant: QuantConfig
    reference: bool = False


@dataclass
class BenchResult:
    label: str
    median_s: float
    ratio: float
    steps: int


def default_cases(reference: list[tuple[int, int]] | None = None) -> list[BenchCase]:
    """fp, fused abc (1,1), (3,3), (5,5) and the literal M·N path for ``reference`` pairs."""
    cases = [BenchCase("fp", QuantConfig(name="fp"))]
    for m, n in [(1, 1), (3, 3), (5, 5)]:
        cases.append(BenchCase(f"abc({m},{n}) fused", QuantConfig(name="abc", M=m, N=n)))
    for m, n in reference if reference is not None else [(3, 3), (5, 5)]:
        cases.append(
            BenchCase(f"abc({m},{n}) reference M·N", QuantConfig(name="abc", M=m, N=n), True)
        )
    return cases


def _step_fn(model: nn.Module, x: torch.Tensor, y: torch.Tensor):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    return step


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
    torch.manual_seed(0)
    x = torch.randn(batch_size, in_channels, input_size, input_size, device=device)
    y = torch.randint(0, 10, (batch_size,), device=device)
    steps = []
    for case in cases:
        net = build_model(model, num_classes=10, in_channels=in_channels, input_size=input_size)
        net = quantize_model(net, case.quant).to(device).train()
        if case.reference:
            set_reference_mode(net, True)
        steps.append(_step_fn(net, x, y))

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    for step in steps:
        for _ in range(warmup):
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
