"""module.distill: the loss terms against hand computations, the teacher frozen and outside
the student's checkpoints, and every bad teacher refused before training in one line."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from omegaconf import OmegaConf

from abc_lab.errors import UserError
from abc_lab.models import build_model
from abc_lab.quant import quantize_model
from abc_lab.runs import derive_key
from abc_lab.training import train as train_module
from abc_lab.training.distill import Distiller, feature_layers, feature_loss, kd_loss
from abc_lab.training.precheck import quick_checks
from abc_lab.training.train import active_teacher, train

from .conftest import move_run

SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}


def _softmax(row: list[float], T: float) -> list[float]:
    exps = [math.exp(v / T) for v in row]
    return [e / sum(exps) for e in exps]


def test_kd_term_matches_a_hand_computation():
    student = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    teacher = [[2.0, 0.0, 1.0], [1.0, 1.0, 1.0]]
    T = 2.0
    expected = 0.0
    for s, t in zip(student, teacher, strict=True):
        p, q = _softmax(t, T), _softmax(s, T)
        expected += sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    expected = expected / len(student) * T * T  # batch mean, times T²
    s = torch.tensor(student, requires_grad=True)
    value = kd_loss(s, torch.tensor(teacher), T)
    assert value.item() == pytest.approx(expected, rel=1e-6)
    # its gradient is T · (softmax(s/T) - softmax(t/T)) / batch: the soft labels' pull
    value.backward()
    grad = [
        [
            T * (qi - pi) / len(student)
            for pi, qi in zip(_softmax(t, T), _softmax(r, T), strict=True)
        ]
        for r, t in zip(student, teacher, strict=True)
    ]
    assert torch.allclose(s.grad, torch.tensor(grad), atol=1e-6)
    assert kd_loss(torch.tensor(teacher), torch.tensor(teacher), T).item() == pytest.approx(
        0.0, abs=1e-7
    )


def test_feature_term_compares_directions_not_scales():
    a = torch.randn(3, 4, 5, 5)
    assert feature_loss([a], [7.0 * a]).item() == pytest.approx(0.0, abs=1e-6)
    assert feature_loss([a], [-a]).item() == pytest.approx(4.0, rel=1e-6)  # 2 - 2·cos(π)
    b = torch.randn(3, 4, 5, 5)
    cos = torch.nn.functional.cosine_similarity(a.flatten(1), b.flatten(1)).mean()
    both = feature_loss([a, a], [b, 7.0 * a]).item()  # mean over the two stages
    assert both == pytest.approx(float(2 - 2 * cos) / 2, rel=1e-5)


def test_feature_layers_are_the_stages():
    assert feature_layers(build_model(**SPEC)) == ["layer1", "layer2", "layer3"]
    vgg = build_model("vgg_small", num_classes=10, in_channels=1, input_size=28)
    pools = feature_layers(vgg)
    assert len(pools) == 3 and all(
        isinstance(vgg.get_submodule(n), torch.nn.MaxPool2d) for n in pools
    )
    assert feature_layers(build_model(**SPEC), ["layer2.0"]) == ["layer2.0"]
    with pytest.raises(UserError, match="no module 'layer9'"):
        feature_layers(build_model(**SPEC), ["layer9"])


def test_distiller_loss_is_the_documented_sum():
    torch.manual_seed(0)
    teacher = build_model(**SPEC)
    student = quantize_model(build_model(**SPEC), "abc")
    d = Distiller(teacher, temperature=3.0, weight=0.25, feature_weight=0.5)
    d.attach(student)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    x, y = torch.randn(4, 1, 28, 28), torch.tensor([0, 1, 2, 3])
    with d.student_features() as feats:
        logits = student(x)
    assert len(feats) == 3  # layer1..layer3 of the student, captured in the forward pass
    ce = torch.nn.functional.cross_entropy(logits, y)
    total, parts = d.loss(x, logits, ce, feats)
    with torch.no_grad():
        t_logits = teacher(x)
    kd = kd_loss(logits, t_logits, 3.0)
    assert parts["distill_loss"].item() == pytest.approx(kd.item(), rel=1e-6)
    expected = 0.75 * ce + 0.25 * kd + 0.5 * parts["feature_loss"]
    assert total.item() == pytest.approx(expected.item(), rel=1e-6)
    total.backward()
    assert all(p.grad is None for p in teacher.parameters())  # nothing flows to the teacher
    assert student.get_submodule("layer1.0.conv1").weight.grad is not None
    with torch.no_grad():  # outside training steps the hooks keep nothing
        student(x)
    with d.student_features() as again:
        pass
    assert again == []


# ---------------------------------------------------------------- runs with a teacher


@pytest.fixture
def fp_teacher(compose_cfg, tmp_path) -> Path:
    """A finished fp run (shrunk), moved aside so that later runs do not overwrite it."""
    cfg, run_dir = compose_cfg("quant=fp", "test=false")
    assert train(cfg, run_dir)["status"] == "finished"
    return move_run(run_dir, tmp_path / "teacher")


@pytest.mark.slow
def test_distilled_run_keeps_the_teacher_frozen_and_out_of_its_checkpoints(
    compose_cfg, fp_teacher, monkeypatch
):
    loaded = {}
    real = train_module.load_teacher

    def spy(cfg, path):
        loaded["teacher"], ckpt = real(cfg, path)
        loaded["before"] = {k: v.clone() for k, v in loaded["teacher"].state_dict().items()}
        return loaded["teacher"], ckpt

    monkeypatch.setattr(train_module, "load_teacher", spy)
    cfg, run_dir = compose_cfg(
        "quant=abc", "quant.M=2", "quant.N=2", f"module.distill.teacher={fp_teacher}",
        "module.distill.feature_weight=0.1", "logger=csv",
    )  # fmt: skip
    record = train(cfg, run_dir)
    assert record["status"] == "finished"
    teacher = loaded["teacher"]
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    after = teacher.state_dict()
    assert all(torch.equal(after[k], v) for k, v in loaded["before"].items())  # BN stats too
    # checkpoints hold the student alone
    best = torch.load(record["checkpoints"]["best"], weights_only=True)["state_dict"]
    student = quantize_model(build_model(**SPEC), cfg.quant.name)
    model_keys = {f"model.{k}" for k in student.state_dict()}
    assert {k for k in best if k.startswith("model.")} == model_keys
    assert not any("teacher" in k for k in best)
    # the record: the teacher's checkpoint in the key, its run named as init.source is
    teacher_ckpt = json.loads((fp_teacher / "results.json").read_text())["checkpoints"]["best"]
    assert record["key"]["module.distill.teacher"] == str(Path(teacher_ckpt).resolve())
    assert record["key"]["module.distill.feature_weight"] == 0.1
    assert record["distill"]["teacher_source"]["run"] == "fp"
    # the terms were logged per epoch
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    logged = {k for row in rows for k, v in row.items() if v not in ("", None)}
    assert {"train/distill_loss", "train/feature_loss", "train/ce_loss"} <= logged


def _copy_run(src: Path, dst: Path, config_edit=None, status: str | None = None) -> Path:
    shutil.copytree(src, dst)
    record = json.loads((dst / "results.json").read_text())
    for kind in ("best", "last"):
        record["checkpoints"][kind] = str(
            dst / "checkpoints" / Path(record["checkpoints"][kind]).name
        )
    if status:
        record["status"] = status
    (dst / "results.json").write_text(json.dumps(record))
    if config_edit:
        config = yaml.safe_load((dst / "config.yaml").read_text())
        config_edit(config)
        (dst / "config.yaml").write_text(yaml.safe_dump(config))
    return dst


def _set(path: str, value):
    def edit(config):
        *parents, leaf = path.split(".")
        node = config
        for name in parents:
            node = node[name]
        node[leaf] = value

    return edit


@pytest.mark.slow
def test_bad_teachers_stop_before_training_with_exit_2_and_one_line(
    compose_cfg, fp_teacher, tmp_path, capsys
):
    from abc_lab.training.entry import task

    lone = tmp_path / "lone.ckpt"
    shutil.copy(next((fp_teacher / "checkpoints").glob("best*.ckpt")), lone)
    cases = {
        "missing": (tmp_path / "nowhere", "does not exist"),
        "unfinished": (_copy_run(fp_teacher, tmp_path / "running", status="running"),
                       "not finished"),
        "no config": (lone, "not in a run directory with config.yaml"),
        "other model": (_copy_run(fp_teacher, tmp_path / "vgg", _set("model.name", "vgg_small")),
                        "another architecture (model.name vgg_small vs resnet20)"),
        "weights do not fit": (_copy_run(fp_teacher, tmp_path / "abc", _set("quant.name", "abc")),
                               "incompatible architecture"),
        "other dataset": (_copy_run(fp_teacher, tmp_path / "cifar", _set("data.name", "cifar10")),
                          "other data (data.name cifar10 vs fashion_mnist)"),
        "other classes": (_copy_run(fp_teacher, tmp_path / "c100",
                                    _set("model.num_classes", 100)),
                          "other data (model.num_classes 100 vs 10)"),
    }  # fmt: skip
    for name, (teacher, words) in cases.items():
        cfg, run_dir = compose_cfg("quant=abc", f"module.distill.teacher={teacher}")
        capsys.readouterr()
        with pytest.raises(SystemExit) as exit_:
            task(cfg)
        err = capsys.readouterr().err
        lines = [ln for ln in err.splitlines() if ln.strip()]
        assert exit_.value.code == 2, name
        assert len(lines) == 1 and lines[0].startswith("error: module.distill.teacher"), (name, err)
        assert words in lines[0], (name, lines[0])
        assert not (run_dir / "results.json").exists() and not (run_dir / "checkpoints").exists()


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["module.distill.temperature=0"], "temperature=0 must be a number > 0"),
        (["module.distill.weight=1.5"], "weight=1.5 must be a number in [0, 1]"),
        (["module.distill.feature_weight=-1"], "feature_weight=-1 must be a number >= 0"),
    ],
)
def test_bad_distill_settings_are_refused_without_torch_work(compose_cfg, overrides, words):
    cfg, _ = compose_cfg(*overrides)
    with pytest.raises(UserError) as err:
        quick_checks(cfg)
    assert words in str(err.value)


def test_a_teacher_whose_terms_weigh_0_is_distillation_off(compose_cfg):
    """weight 0 and feature_weight 0: accepted (a sweep may include it), keyed and recorded
    as no distillation; the training code checks the teacher but builds no distiller."""
    off, _ = compose_cfg(
        "module.distill.teacher=/x", "module.distill.weight=0", "module.distill.temperature=2.0"
    )
    quick_checks(off)  # no error
    plain, _ = compose_cfg()
    on, _ = compose_cfg("module.distill.teacher=/x", "module.distill.weight=0.5")
    key = lambda c: derive_key(OmegaConf.to_container(c, resolve=True), ["M", "N"])  # noqa: E731
    assert active_teacher(off) is None and active_teacher(plain) is None
    assert active_teacher(on) == "/x"
    assert key(off) == key(plain) != key(on)
    assert key(off)["module.distill.teacher"] is None
