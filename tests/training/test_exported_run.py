"""A trained run, exported and evaluated by the bitwise engine, gives the record's test top-1."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from abc_lab.cli import main
from abc_lab.training.train import train

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST IDX files not installed")
@pytest.mark.skipif(not shutil.which("c++"), reason="no C++ compiler: no bitwise kernels")
def test_engine_top1_equals_the_records_test_top1(compose_cfg, capsys):
    """Training evaluates the test set in the reference arithmetic, which the engine
    reproduces to the bit: on the same 2,000 test images, the same top-1 and no image
    differing (`make engine-check` runs the full test set)."""
    cfg, run_dir = compose_cfg(
        "quant=xnor", "data=fashion_mnist", "data.train_subset=2048", "data.batch_size=64",
        "trainer.limit_train_batches=32", "optim=adam", "optim.lr=0.001",
        "trainer.limit_test_batches=2", "data.eval_batch_size=1000",
    )  # fmt: skip
    record = train(cfg, run_dir)
    want = record["metrics"]["test"]["acc1"]
    assert 0.15 < want < 1.0  # trained past chance, so the classes are not one constant
    model = run_dir / "m.safetensors"
    assert main(["export", str(run_dir), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model), "--limit", "2000", "--batch-size", "1000"]) == 0
    out = capsys.readouterr().out
    assert "on 2000 test images" in out and "(simulated" not in out, out
    # 2,000 images: every top-1 is a multiple of 0.05%, exact at two decimals
    got = re.search(r"engine top-1 ([0-9.]+)%.*simulation ([0-9.]+)%, run record ([0-9.]+)%", out)
    assert got is not None, out
    assert got[1] == got[2] == got[3] == f"{100 * want:.2f}"
    assert "images where the predicted class differs: 0;" in out
    assert "largest relative logit difference 0.00e+00" in out
