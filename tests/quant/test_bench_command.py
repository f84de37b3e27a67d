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
