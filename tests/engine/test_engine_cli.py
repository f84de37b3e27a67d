"""abc-lab export / evaluate on a run directory laid out as abc-lab train writes it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from abc_lab.cli import main
from abc_lab.models import build_model
from abc_lab.quant import QuantConfig, quantize_model

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}


def _run_dir(tmp_path: Path, quant: QuantConfig | None = None) -> Path:
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    quant = quant or QuantConfig(name="abc", M=2, N=2)
    torch.manual_seed(0)
    model = quantize_model(build_model(**SPEC), quant).eval()
    ckpt = run / "checkpoints" / "best-epoch0.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}}, ckpt)
    config = {
        "model": {"_target_": "abc_lab.models.build_model", **SPEC},
        "quant": {"_target_": "abc_lab.quant.QuantConfig", **quant.to_dict()},
        "data": {
            "_target_": "abc_lab.data.FashionMNISTDataModule", "name": "fashion_mnist",
            "data_dir": None, "batch_size": 128, "eval_batch_size": 512, "num_workers": 0,
            "val_size": 5000, "seed": 0, "augment": False, "download": False,
            "train_subset": None,
        },
    }  # fmt: skip
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    record = {
        "schema": "abc-lab/run-record", "version": 2, "status": "finished",
        "key": {"model.name": SPEC["name"], "data.name": "fashion_mnist",
                "quant.name": quant.name, "seed": 0},
        "quant": quant.identity(),
        "checkpoints": {"best": str(ckpt), "last": str(ckpt)},
        "metrics": {"test": {"acc1": 0.1}},
    }  # fmt: skip
    (run / "results.json").write_text(json.dumps(record))
    return run


def test_export_writes_file(tmp_path, capsys):
    run = _run_dir(tmp_path)
    assert main(["export", str(run), "--out", str(tmp_path / "m.safetensors")]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "m.safetensors").is_file() and "summary packed weights" in out


def test_export_rejects_bad_sources(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 2
    (tmp_path / "empty").mkdir()
    assert main(["export", str(tmp_path / "empty")]) == 2
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 2 and all(ln.startswith("error:") for ln in lines)


@pytest.mark.parametrize("name", ["abc_act_only", "sign_act_only"])
def test_export_refuses_activation_only_runs_in_one_line(tmp_path, capsys, name):
    """Stage 1 of two-stage training keeps float weights: no packed form, one line naming
    the fix (export the binary-weight run trained from it)."""
    run = _run_dir(tmp_path, QuantConfig(name=name, N=2))
    assert main(["export", str(run)]) == 2
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), lines
    assert "float weights" in lines[0] and "recipe=two_stage_2" in lines[0]
    assert not (run / "export").exists()


def test_evaluate_rejects_bad_file(tmp_path, capsys):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 100)
    assert main(["evaluate", str(bad)]) == 2
    out = capsys.readouterr().out.strip()
    assert out.startswith("error:") and "bad.safetensors" in out and "\n" not in out


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST IDX files not installed")
def test_evaluate_prints_top1(tmp_path, capsys, native):
    run = _run_dir(tmp_path)
    path = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--out", str(path)]) == 0
    assert main(["evaluate", str(path), "--limit", "300", "--batch-size", "100"]) == 0
    out = capsys.readouterr().out
    assert "on 300 test images: engine top-1" in out and "run record 10.00%" in out


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST IDX files not installed")
def test_evaluate_fails_when_engine_and_simulation_differ(tmp_path, capsys, monkeypatch):
    """The engine is exact: an image on which it differs from the simulation is a defect,
    named with both logits, and the command exits 1."""
    from abc_lab.engine import evaluate as ev

    run = _run_dir(tmp_path)
    path = tmp_path / "m.safetensors"
    assert main(["export", str(run), "--out", str(path)]) == 0
    real = ev.evaluate

    def skewed(engine, simulated, *args, **kwargs):
        result = real(engine, simulated, *args, **kwargs)
        result.disagreements.append(ev.Disagreement(7, 3, [0.1, 0.9], [0.9, 0.1], 1.6))
        result.class_disagreements += 1
        return result

    monkeypatch.setattr(ev, "evaluate", skewed)
    assert main(["evaluate", str(path), "--limit", "100", "--batch-size", "100"]) == 1
    out = capsys.readouterr().out
    assert "image 7 (label 3" in out and "differ on 1 image(s)" in out
