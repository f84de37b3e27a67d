"""`abc-lab train`: every model x quantizer composes and trains, records, errors, resume."""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from abc_lab.errors import UserError
from abc_lab.quant import QuantConv2d
from abc_lab.training.train import build_model, preflight, train

from .conftest import ABC_LAB, SHRINK_CLI, cli_env, run_cli

QUANTS = ["fp", "bnn", "bwn", "xnor", "abc", "abc_weight_only"]
# every quantizer on each kind of network (CIFAR-style and ImageNet-style ResNet with basic
# blocks, VGG); the deeper ResNets once more with the layer types they add (ResNet-34: more
# basic blocks, ABC; ResNet-50: bottleneck blocks, 1x1 binary convolutions)
PAIRS = [
    *[(model, q) for model in ("resnet20", "resnet18", "vgg_small") for q in QUANTS],
    ("resnet34", "fp"), ("resnet34", "abc"),
    ("resnet50", "fp"), ("resnet50", "xnor"), ("resnet50", "bwn"),
]  # fmt: skip


@pytest.mark.parametrize(("model", "quant"), PAIRS)
def test_every_model_and_quantizer_trains(compose_cfg, model, quant):
    cfg, run_dir = compose_cfg(f"model={model}", f"quant={quant}", "test=false",
                               "callbacks=none")  # fmt: skip
    record = train(cfg, run_dir)
    assert record["status"] == "finished"
    assert record["key"]["model.name"] == model and record["key"]["quant.name"] == cfg.quant.name
    assert record["epochs_done"] == 1
    assert 0.0 <= record["metrics"]["val"]["acc1"] <= 1.0
    # the stem and classifier adapted to Fashion-MNIST (1 channel, 10 classes)
    assert cfg.model.in_channels == 1 and cfg.model.num_classes == 10
    binary = record["summary"]["binary_macs"] > 0
    assert binary == (quant in ("bnn", "xnor", "abc"))


RECORD_FIELDS = {
    "schema", "version", "status", "error", "run_dir", "started_at", "finished_at",
    "wall_time_s", "key", "config", "epochs_done", "metrics", "history", "quant_params",
    "summary", "throughput", "checkpoints", "versions", "git", "wandb",
}  # fmt: skip


def test_results_json_has_every_field(compose_cfg):
    cfg, run_dir = compose_cfg(
        "quant=abc",
        "quant.M=2",
        "quant.N=2",
        "trainer.max_epochs=2",
        "trainer.limit_train_batches=4",
    )
    train(cfg, run_dir)
    record = json.loads((run_dir / "results.json").read_text())
    assert RECORD_FIELDS <= set(record)
    assert record["schema"] == "abc-lab/run-record" and record["status"] == "finished"
    assert record["quant"]["label"] == "abc(2,2)" and record["key"]["trainer.max_epochs"] == 2
    assert [h["epoch"] for h in record["history"]] == [0, 1]
    assert set(record["metrics"]["test"]) == {"acc1", "acc5", "loss"}
    assert record["metrics"]["best_val"]["epoch"] in (0, 1)
    assert record["config"]["quant"]["M"] == 2
    layer = next(iter(record["quant_params"].values()))
    assert len(layer["alpha"]) == 2 and len(layer["beta"]) == 2 and len(layer["v"]) == 2
    s = record["summary"]
    assert s["memory_packed_bytes"] < s["memory_float_bytes"] and s["binary_ops"] > 0
    assert record["throughput"]["train_samples_per_s"] > 0  # 8 batches, 5 left out as warm-up
    assert record["versions"]["torch"] == torch.__version__
    assert Path(record["checkpoints"]["best"]).is_file()
    assert "=" not in Path(record["checkpoints"]["best"]).name  # usable as init_from=<path>
    assert (run_dir / "config.yaml").is_file()


def test_task_returns_the_optimized_metric_for_hydra_sweepers(compose_cfg):
    from abc_lab.training.entry import task

    cfg, run_dir = compose_cfg("quant=fp", "optimized_metric=val/loss")
    value = task(cfg)
    record = json.loads((run_dir / "results.json").read_text())
    assert value is not None and value == pytest.approx(record["metrics"]["val"]["loss"])


def test_init_from_loads_full_precision_weights(compose_cfg, tmp_path):
    cfg, run_dir = compose_cfg("quant=fp", "test=false")
    record = train(cfg, run_dir)
    ckpt = record["checkpoints"]["best"]  # its path must pass as a Hydra override
    state = torch.load(ckpt, weights_only=True)["state_dict"]
    cfg2, run_dir2 = compose_cfg("quant=abc", f"init_from={ckpt}")
    model = build_model(cfg2, preflight(cfg2, run_dir2))
    conv = model.get_submodule("layer1.0.conv1")
    assert isinstance(conv, QuantConv2d)
    assert torch.equal(conv.weight, state["model.layer1.0.conv1.weight"])
    assert torch.equal(model.conv1.weight, state["model.conv1.weight"])
    record2 = train(cfg2, run_dir2)
    assert record2["key"]["init_from"] == str(Path(ckpt).resolve())


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["quant.M=0"], "M must be an integer >= 1"),
        (["quant.N=-1"], "N must be an integer >= 0"),
        (["quant.M=2.5"], "M must be an integer"),
        (["quant.name=ternary"], "unknown quantizer 'ternary'"),
        (["optim.lr=0"], "optim.lr=0"),
        (["optim.lr=-0.1"], "must be a number > 0"),
        (["paths.data_dir=/nonexistent/fmnist"], "/nonexistent/fmnist"),
        (["init_from=/nonexistent/x.ckpt"], "does not exist"),
        (["ckpt_path=/nonexistent/x.ckpt"], "does not exist"),
        (["ckpt_path=last"], "holds no run to resume"),
    ],
)
def test_bad_input_is_rejected_before_training(compose_cfg, overrides, words):
    cfg, run_dir = compose_cfg(*overrides)
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(".", r"\.")):
        train(cfg, run_dir)
    assert not (run_dir / "results.json").exists()


def test_empty_data_dir_and_corrupt_or_foreign_checkpoints(compose_cfg, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cfg, run_dir = compose_cfg(f"paths.data_dir={empty}")
    with pytest.raises(UserError, match=str(empty)):
        train(cfg, run_dir)
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(b"not a checkpoint")
    cfg, run_dir = compose_cfg(f"init_from={corrupt}")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        train(cfg, run_dir)
    cfg, run_dir = compose_cfg("quant=fp", "model=vgg_small", "test=false")
    other = train(cfg, run_dir)["checkpoints"]["last"]
    cfg, run_dir = compose_cfg("quant=abc", "model=resnet20", f"init_from={other}")
    with pytest.raises(UserError, match="incompatible architecture"):
        train(cfg, run_dir)
    cfg, run_dir = compose_cfg("quant=abc", "model=resnet20", f"ckpt_path={other}")
    with pytest.raises(UserError, match="incompatible architecture"):
        train(cfg, run_dir)


def test_console_script_trains_and_reports(tmp_path):
    """Two runs of the installed script: fp, then abc(2,3), which finds that fp run and prints
    its gap (the message without a matching fp run: test_reliability's describe tests)."""
    res = run_cli("train", *SHRINK_CLI, "hydra.run.dir=outputs/fp", "quant=fp", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    res = run_cli("train", *SHRINK_CLI, "hydra.run.dir=outputs/abc", "quant.M=2", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    out = res.stdout
    assert "test top-1" in out and "run directory" in out and "abc(2,3)" in out
    assert "gap" in out and "full precision (same setup, 1 run)" in out
    assert (tmp_path / "outputs" / "abc" / "config_tree.txt").is_file() is False  # print_config
    # the sign is the report's: binary minus fp, negative when the binary run is worse
    acc = {
        name: json.loads((tmp_path / "outputs" / name / "results.json").read_text())["metrics"][
            "test"
        ]["acc1"]
        for name in ("fp", "abc")
    }
    printed = float(re.search(r"gap ([+-][0-9.]+) points", res.stdout).group(1))
    assert printed == pytest.approx(100 * (acc["abc"] - acc["fp"]), abs=0.006)
    # the record's key is the one runs derives from the resolved config
    record = json.loads((tmp_path / "outputs" / "abc" / "results.json").read_text())
    assert record["status"] == "finished"
    assert record["version"] == 2 and record["key"]["quant.M"] == 2
    assert record["quant"]["label"] == "abc(2,3)" and record["overrides"][-1] == "quant.M=2"
    assert set(record["quant_params_init"]) == set(record["quant_params"])


def test_console_script_bad_input_one_line_and_no_run_dir(tmp_path):
    res = run_cli("train", "quant.M=0", "hydra.run.dir=run", cwd=tmp_path)
    assert res.returncode == 2
    lines = [ln for ln in res.stderr.strip().splitlines() if ln.strip()]
    assert lines == ["error: M must be an integer >= 1, got 0 (check the quant.* overrides)"]
    assert not (tmp_path / "run").exists()
    for override, known in (("model=resnet99", "resnet20"), ("data=mnist3d", "fashion_mnist"),
                            ("quant=ternary", "xnor")):  # fmt: skip
        res = run_cli("train", override, cwd=tmp_path)
        bad = override.split("=")[1]
        assert res.returncode != 0 and bad in res.stderr and known in res.stderr, res.stderr


def test_help_and_cfg_job(tmp_path):
    res = run_cli("train", "--help", cwd=tmp_path)
    quants = "quant: abc, abc_act_only, abc_weight_only, bnn, bwn, fp, sign_act_only, xnor"
    assert res.returncode == 0 and quants in res.stdout
    res = run_cli("train", "--cfg", "job", "model=resnet34", "quant.M=5", cwd=tmp_path)
    assert res.returncode == 0
    assert "name: resnet34" in res.stdout and "M: 5" in res.stdout


def test_wandb_offline_run_is_recorded_and_finished(tmp_path):
    res = run_cli(
        "train", *[s for s in SHRINK_CLI if s != "logger=none"], "logger=wandb",
        "hydra.run.dir=run", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    w = record["wandb"]
    assert w["mode"] == "offline" and w["id"]
    runs = list((tmp_path / "run" / "wandb").glob(f"offline-run-*-{w['id']}"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
    assert "wandb sync" in res.stdout


def _val_epochs(metrics_csv: Path) -> list[int]:
    with open(metrics_csv, newline="") as fh:
        return sorted(int(float(r["epoch"])) for r in csv.DictReader(fh) if r.get("val/acc1"))


def test_resume_after_sigkill_reaches_the_same_epoch_count(tmp_path):
    """Resuming continues the run: history, start time, wall time, W&B run and CSV rows."""
    args = [
        "train", *[s for s in SHRINK_CLI if "limit_train" not in s and "max_epochs" not in s
                   and s != "logger=none"],
        "trainer.max_epochs=3", "+trainer.limit_train_batches=8", "data.train_subset=256",
        "callbacks.checkpoint_steps.every_n_train_steps=3", "hydra.run.dir=run",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [ABC_LAB, *args], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    record_path = tmp_path / "run" / "results.json"
    deadline = time.time() + 240
    while time.time() < deadline:  # kill inside epoch 1, after a step checkpoint of it
        time.sleep(0.2)
        step_ckpt = tmp_path / "run" / "checkpoints" / "last-step.ckpt"
        if record_path.exists() and step_ckpt.exists():
            record = json.loads(record_path.read_text())
            if (
                record["epochs_done"] >= 1
                and step_ckpt.stat().st_mtime > record_path.stat().st_mtime
            ):
                break
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed = json.loads(record_path.read_text())
    assert killed["status"] == "running" and 1 <= killed["epochs_done"] < 3
    metrics_csv = tmp_path / "run" / "csv" / "metrics.csv"
    assert 0 in _val_epochs(metrics_csv)
    res = run_cli(*args, "ckpt_path=last", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    record = json.loads(record_path.read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 3
    assert [h["epoch"] for h in record["history"]] == [0, 1, 2]
    assert record["history"][0] == killed["history"][0]  # nothing lost from before the kill
    assert record["started_at"] == killed["started_at"]
    assert record["wall_time_s"] > killed["wall_time_s"]
    assert record["wandb"]["id"] == killed["wandb"]["id"]  # the same W&B run continues
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(r.name.endswith(f"-{killed['wandb']['id']}") for r in runs)
    assert _val_epochs(metrics_csv) == [0, 1, 2]  # the CSV keeps the rows from before the kill
    assert "anonymous setting" not in res.stdout + res.stderr


def test_ddp_with_two_cpu_processes(tmp_path):
    res = run_cli(
        "train", *SHRINK_CLI, "trainer=ddp_cpu", "trainer.max_epochs=2", "logger=csv",
        "hydra.run.dir=run", cwd=tmp_path,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in res.stderr + res.stdout
    record = json.loads((tmp_path / "run" / "results.json").read_text())
    assert record["status"] == "finished" and record["epochs_done"] == 2
    assert [h["epoch"] for h in record["history"]] == [0, 1]
    assert record["metrics"]["test"]["acc1"] is not None
    assert record["config"]["trainer"]["strategy"] == "ddp"


@pytest.mark.parametrize("experiment", ["paper_resnet18_imagenet", "forest_trail", "fmnist_study"])
def test_experiment_presets_compose(compose_cfg, experiment):
    cfg, _ = compose_cfg(f"experiment={experiment}", shrink=False)
    expected = {
        "paper_resnet18_imagenet": ("resnet18", "imagenet", 90),
        "forest_trail": ("resnet18", "image_folder", 30),
        "fmnist_study": ("resnet20", "fashion_mnist", 8),
    }[experiment]
    assert (cfg.model.name, cfg.data.name, cfg.trainer.max_epochs) == expected
    if experiment == "paper_resnet18_imagenet":
        assert cfg.hydra.sweeper.params["quant.M"] == "1,3,5"
        assert cfg.trainer.strategy == "ddp"
    if experiment == "forest_trail":
        assert cfg.data.hflip is False


def test_wandb_goes_online_only_when_asked(compose_cfg, monkeypatch):
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SWEEP_ID", raising=False)
    cfg, _ = compose_cfg("logger=wandb", shrink=False)
    assert cfg.logger.wandb.offline is True
    monkeypatch.setenv("WANDB_MODE", "online")
    assert cfg.logger.wandb.offline is False
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SWEEP_ID", "abc123")  # under `wandb agent`
    assert cfg.logger.wandb.offline is False
    cfg, _ = compose_cfg("logger=wandb", "logger.wandb.offline=true", shrink=False)
    assert cfg.logger.wandb.offline is True


def test_slurm_launcher_preset_composes(tmp_path):
    res = run_cli("train", "hydra/launcher=slurm", "--cfg", "hydra", cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "abc_lab_slurm.launcher.SlurmLauncher" in res.stdout
    assert "timeout_min: 240" in res.stdout


def test_sigterm_records_failure_and_exits_non_zero(tmp_path):
    args = [
        "train", *[s for s in SHRINK_CLI if "limit_train" not in s and "max_epochs" not in s],
        "trainer.max_epochs=50", "+trainer.limit_train_batches=4", "hydra.run.dir=run",
    ]  # fmt: skip
    proc = subprocess.Popen(
        [ABC_LAB, *args], cwd=tmp_path, env=cli_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    record_path = tmp_path / "run" / "results.json"
    deadline = time.time() + 120
    while time.time() < deadline:
        time.sleep(0.2)
        if record_path.exists() and json.loads(record_path.read_text())["epochs_done"] >= 1:
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    record = json.loads(record_path.read_text())
    assert record["status"] == "failed" and record["error"] == "terminated by SIGTERM"


def test_a_job_rejected_at_start_leaves_a_valid_failed_record(compose_cfg, tmp_path):
    """In a multirun a rejected job records its failure; reports count and name it."""
    from abc_lab.runs import load_runs, write_record
    from abc_lab.training.entry import failed_at_start

    cfg, run_dir = compose_cfg("quant.M=0")
    with pytest.raises(UserError):
        train(cfg, run_dir)
    write_record(run_dir, failed_at_start(cfg, run_dir, "M=0 must be an integer >= 1"))
    loaded = load_runs([run_dir])
    assert loaded.problems == [] and len(loaded.runs) == 1
    (run,) = loaded.runs
    assert run.status == "failed" and run.error.startswith("M=0")
    assert run.model == "resnet20" and run.key["quant.M"] == 0
