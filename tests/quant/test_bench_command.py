"""`abc-lab bench` refuses a device it cannot use with one line, before building anything."""

import pytest
import torch

from abc_lab.commands import bench


@pytest.mark.parametrize("device", ["banana", "cuda:999" if torch.cuda.is_available() else "cuda"])
def test_unusable_device_is_one_line_and_exit_2(device, capsys):
    assert bench.main(["--device", device, "--rounds", "1"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith(f"error: --device {device}:"), out


def test_cpu_is_usable():
    assert bench.device_problem("cpu") is None


def test_gpu_cases_switch_off_the_gpu_speed_ups_and_each_step_restores_the_settings():
    """On a GPU the bench sets each speed-up against its absence in the same rounds (the
    scanned weight sums, the compiled activation kernels); a case's settings hold during
    its step only."""
    from abc_lab.bench import _step_fn, default_cases
    from abc_lab.models import build_model
    from abc_lab.quant import functional as QF
    from abc_lab.quant import quantize_model

    gpu = {c.label: c for c in default_cases(reference=[], gpu=True)}
    cpu = {c.label: c for c in default_cases(reference=[])}
    assert gpu["abc(3,3) fused, weight sums scattered"].segment_sums == "scatter"
    assert gpu["abc(3,3), eager activations"].kernel == "eager"
    assert gpu["xnor, eager activations"].kernel == "eager"
    assert "abc(3,3) fused, BatchNorm apart" in cpu and "abc(3,3) fused, BatchNorm apart" not in gpu
    assert not any(c.kernel or c.segment_sums != "auto" for c in cpu.values())

    case = gpu["abc(3,3), eager activations"]
    net = quantize_model(build_model("resnet20", 10, in_channels=1, input_size=28), case.quant)
    seen = []
    real = QF._compiled
    QF._compiled = lambda fn: seen.append(QF.kernel_name()) or real(fn)
    try:
        before = QF.kernel_name()
        _step_fn(net.train(), torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,)), case)()
    finally:
        QF._compiled = real
    assert seen and set(seen) == {"eager"}
    assert QF.kernel_name() == before
