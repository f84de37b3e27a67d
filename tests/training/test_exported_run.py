"""A trained run, exported and evaluated by the bitwise engine, gives the record's test top-1."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from abc_lab.cli import main
from abc_lab.training.train import train

FMNIST = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST IDX files not installed")
@pytest.mark.skipif(not shutil.which("c++"), reason="no C++ compiler: no bitwise kernels")
def test_engine_top1_on_the_full_test_set_equals_the_record(compose_cfg, capsys):
    """Training evaluates the test set in the reference arithmetic, which the engine
    reproduces to the bit: the same top-1 on all 10,000 images, no image differing."""
    cfg, run_dir = compose_cfg(
        "quant=xnor", "data=fashion_mnist", "data.train_subset=2048", "data.batch_size=64",
        "trainer.limit_train_batches=32", "trainer.limit_test_batches=1.0", "optim=adam",
        "optim.lr=0.001", "data.eval_batch_size=1000",
    )  # fmt: skip
    record = train(cfg, run_dir)
    want = record["metrics"]["test"]["acc1"]
    assert 0.15 < want < 1.0  # trained past chance, so the classes are not one constant
    model = run_dir / "m.safetensors"
    assert main(["export", str(run_dir), "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(model)]) == 0
    out = capsys.readouterr().out
    assert "images where the predicted class differs: 0;" in out, out
    result = json.loads((run_dir / "inference.json").read_text())["evaluate"]
    assert result["images"] == 10000 and result["backend"] != "simulated (no kernels)"
    # the record's metric is a float32
    assert result["top1_engine"] == result["top1_simulated"] == pytest.approx(want, abs=1e-6)
    assert result["max_rel_diff"] == 0.0 and result["disagreeing_images"] == []
