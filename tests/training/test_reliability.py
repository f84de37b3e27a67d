"""Run directories of jobs started together, bad input in one line, output without a
terminal, train.log, start-up without torch, and where the closing line finds baselines."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from abc_lab.errors import UserError
from abc_lab.quant import QuantConfig
from abc_lab.training.baseline import describe_gap as describe
from abc_lab.training.precheck import quick_checks
from abc_lab.training.resolvers import unique_dir
from abc_lab.training.train import train

from .conftest import ABC_LAB, SHRINK_CLI, cli_env, run_cli

JOBS = 8
# the smallest real training: one batch of 16 images each way, no test, CSV logger
TINY = [
    *[s for s in SHRINK_CLI if s != "logger=none" and "limit_train" not in s],
    "+trainer.limit_train_batches=1", "data.train_subset=16", "test=false", "logger=csv",
]  # fmt: skip


def _no_terminal_env() -> dict[str, str]:
    env = cli_env()
    env.pop("COLUMNS", None)  # as under `abc-lab train > log`: rich would wrap at 80
    return env


@pytest.fixture(scope="module")
def together(tmp_path_factory):
    """JOBS trainings started at the same moment in one directory, output to files."""
    cwd = tmp_path_factory.mktemp("together")
    logs = [(cwd / f"job{i}.out", cwd / f"job{i}.err") for i in range(JOBS)]
    procs = []
    for out, err in logs:
        with open(out, "w") as fo, open(err, "w") as fe:
            procs.append(subprocess.Popen(
                [ABC_LAB, "train", *TINY], cwd=cwd, env=_no_terminal_env(), stdout=fo, stderr=fe
            ))  # fmt: skip
    codes = [p.wait(timeout=900) for p in procs]
    results = [(rc, o.read_text(), e.read_text()) for rc, (o, e) in zip(codes, logs, strict=True)]
    return cwd, results


def test_jobs_started_together_get_their_own_run_directories(together):
    cwd, results = together
    for rc, _, err in results:
        assert rc == 0, err[-3000:]
    records = sorted(cwd.glob("outputs/train/*/*/results.json"))
    dirs = {r.parent for r in records}
    assert len(records) == JOBS and len(dirs) == JOBS
    for path in records:
        record = json.loads(path.read_text())
        assert record["status"] == "finished" and record["run_dir"] == str(path.parent.resolve())
        ckpts = sorted(p.name for p in (path.parent / "checkpoints").iterdir())
        assert not [n for n in ckpts if "-v1" in n], ckpts  # no twins from a shared directory
        rows = (path.parent / "csv" / "metrics.csv").read_text().splitlines()
        assert len(rows) >= 2  # each job has its own CSV log
    printed = {out.split("run directory: ", 1)[1].split("\n", 1)[0] for _, out, _ in results}
    assert printed == {str(d.resolve()) for d in dirs}


def test_unique_dir_is_unique_across_processes(tmp_path):
    base = str(tmp_path / "out" / "12-00-00_resnet20_abc")
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        made = pool.map(unique_dir, [base] * 16)
    assert len(set(made)) == 16 and all(Path(m).is_dir() for m in made)
    assert base in made and f"{base}-16" in made


def test_output_without_terminal_is_wide_and_whole(together):
    _, results = together
    _, out, _ = results[0]
    header = next(line for line in out.splitlines() if "layer" in line and "kind" in line)
    for column in ("params", "bits w/x", "float KiB", "packed KiB", "binary MACs", "float MACs"):
        assert column in header, header
    lines = out.splitlines()
    run_dir = next(line for line in lines if line.startswith("run directory: "))
    assert Path(run_dir.removeprefix("run directory: ")).is_dir()  # the path is not broken
    i = next(i for i, line in enumerate(lines) if "produce one with" in line)
    command = lines[i + 1].strip()  # the whole command on one line, the next line follows
    assert command.startswith("abc-lab train ") and " seed=0" in command, command
    assert lines[i + 2].startswith("run directory: "), lines[i : i + 3]


def test_train_log_holds_what_the_run_printed(together):
    cwd, _ = together
    for log in sorted(cwd.glob("outputs/train/*/*/train.log")):
        text = log.read_text()
        assert "binary MACs" in text and "compression" in text  # the model summary
        assert f"run directory: {log.parent.resolve()}" in text  # the closing lines
        assert "GPU available" in text  # Lightning's messages


def test_normal_run_prints_no_third_party_noise(together):
    _, results = together
    for _, out, err in results:
        both = out + err
        assert "litlogger" not in both
        assert both.count("`isinstance(treespec, LeafSpec)` is deprecated") <= 1
        assert both.count("The `srun` command is available") <= 1  # where srun exists


def test_repeated_warning_is_logged_once(caplog):
    import logging
    import warnings

    from abc_lab.training.entry import route_logs

    # an earlier test of this worker may have left logging capturing warnings: captureWarnings
    # then keeps the display function pytest has since restored, so start from no capture
    logging.captureWarnings(False)
    route_logs()
    with caplog.at_level(logging.WARNING, logger="py.warnings"):
        for _ in range(3):
            with warnings.catch_warnings():  # as libraries do: the registry forgets
                warnings.simplefilter("always")
                warnings.warn("the same notice", UserWarning, stacklevel=1)
        warnings.warn("another notice", UserWarning, stacklevel=1)
    logging.captureWarnings(False)
    texts = [r.getMessage() for r in caplog.records if r.name == "py.warnings"]
    assert [t.split("UserWarning: ")[1].splitlines()[0] for t in texts] == [
        "the same notice", "another notice",
    ]  # fmt: skip
    assert not any(t.endswith("\n") for t in texts)


def test_report_table_is_whole_without_terminal(together):
    cwd, _ = together
    res = subprocess.run(
        [ABC_LAB, "report", "outputs", "--name", "r", "--out", "reports"], cwd=cwd,
        capture_output=True, text=True, timeout=300, env=_no_terminal_env(),
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    short = [ln for ln in res.stdout.splitlines() if 0 < len(ln.strip("│┃ ")) <= 2]
    assert len(short) < 5, res.stdout[:3000]  # no column squeezed to a letter per line
    row = next(ln for ln in res.stdout.splitlines() if "abc(3,3)" in ln)
    assert "no baseline" in row and "9.1×" in row, row  # one table row, one line


def test_multirun_sweep_dirs_are_unique(compose_cfg):
    made = []
    for _ in range(2):  # two commands composing in the same second
        cfg, _ = compose_cfg()
        made.append(OmegaConf.select(cfg, "hydra.sweep.dir"))
        made.append(OmegaConf.select(cfg, "hydra.run.dir"))
        assert OmegaConf.select(cfg, "hydra.run.dir") == made[-1]  # resolved once per job
    assert len(set(made)) == 4 and all(Path(m).is_dir() for m in made)


@pytest.mark.parametrize(
    "override, line",
    [
        ("model=resnet999", "error: unknown model 'resnet999'; choose one of resnet18, "
                            "resnet18_bireal, resnet20, resnet20_bireal, resnet34, resnet50, "
                            "vgg_small"),
        ("data=nosuch", "error: unknown data 'nosuch'; choose one of cifar10, fashion_mnist, "
                        "image_folder, imagenet"),
        ("quant=nosuch", "error: unknown quant 'nosuch'; choose one of abc, abc_act_only, "
                         "abc_weight_only, bnn, bwn, fp, sign_act_only, xnor"),
        ("recipe=finetune", "error: recipe=finetune needs init_from; pass init_from=<value> "
                            "(see conf/recipe/finetune.yaml)"),
        ("quant.MM=3", "error: quant.MM is not an option of quant (options: name, M, N, shifts, "),
        ("seeed=1", "error: seeed is not an option of the config (options: data, model, quant, "),
        ("quant.M=0", "error: M must be an integer >= 1, got 0 (check the quant.* overrides)"),
    ],
)  # fmt: skip
def test_bad_group_option_or_key_exits_2_with_one_line(tmp_path, override, line):
    res = run_cli("train", override, cwd=tmp_path, env={"COLUMNS": "80"})
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), res.stderr
    assert not list(tmp_path.glob("outputs/train/*/*"))  # no run directory left behind


@pytest.mark.parametrize("argv", [
    ["--help"], ["train", "--help"], ["train", "--cfg", "job"], ["train", "quant.M=0"],
    ["train", "model=resnet999"], ["train", "optim.lr=0"], ["train", "recipe=two_stage_2"],
    ["train", "module.distill.temperature=0"],
])  # fmt: skip
def test_quick_answers_do_not_import_torch(tmp_path, argv):
    code = (
        "import sys\nfrom abc_lab.cli import main\n"
        f"try:\n    rc = main({argv!r})\nexcept SystemExit as e:\n    rc = e.code\n"
        "print('RC', rc, 'torch' in sys.modules, 'lightning' in sys.modules, "
        "'wandb' in sys.modules)\n"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
        timeout=120, env=cli_env(),
    )  # fmt: skip
    last = res.stdout.strip().splitlines()[-1]
    assert last.endswith("False False False"), (last, res.stderr[-2000:])
    assert last.split()[1] == ("0" if "--help" in argv or "--cfg" in argv else "2")


@pytest.mark.parametrize("override", ["quant.M=0", "quant.N=-1", "quant.M=2.5", "quant.N=x",
                                      "quant.M=true"])  # fmt: skip
def test_quick_checks_say_what_quant_config_says(compose_cfg, override):
    cfg, _ = compose_cfg(override)
    with pytest.raises(UserError) as quick:
        quick_checks(cfg)
    fields = {k: v for k, v in OmegaConf.to_container(cfg.quant).items() if k != "_target_"}
    with pytest.raises(ValueError) as full:
        QuantConfig(**fields)
    assert str(quick.value) == f"{full.value} (check the quant.* overrides)"


def test_baseline_found_under_run_dir_via_roots_and_init_from(compose_cfg, tmp_path):
    cfg, run_dir = compose_cfg("quant=fp")  # as placed with hydra.run.dir=<tmp>/run
    fp = train(cfg, run_dir)
    assert fp["status"] == "finished"
    binary = json.loads(json.dumps(fp))
    binary["key"].update({"quant.name": "abc", "quant.M": 3, "quant.N": 3})
    binary["quant"] = QuantConfig(name="abc", M=3, N=3).identity()
    binary["metrics"]["test"]["acc1"] = 0.5
    path = tmp_path / "binary" / "results.json"

    def describe_gap(record):
        return describe(record, path)

    msg = describe_gap(binary)  # default roots: <tmp>/outputs and <tmp>/multirun only
    assert msg.startswith("no matching full-precision run found (looked in ")
    assert str(tmp_path / "outputs") in msg and "quant=fp" in msg
    binary["config"]["paths"]["baseline_roots"] = [str(run_dir)]
    assert describe_gap(binary).startswith("full precision (same setup, 1 run): ")
    binary["config"]["paths"]["baseline_roots"] = [str(tmp_path / "outputs")]
    binary["key"]["init_from"] = fp["checkpoints"]["best"]  # the fp run's own checkpoint
    assert Path(fp["checkpoints"]["best"]).parent.parent == run_dir
    assert describe_gap(binary).startswith("full precision (same setup, 1 run): ")
    binary["key"]["init_from"] = str(run_dir)  # or its directory
    assert describe_gap(binary).startswith("full precision (same setup, 1 run): ")
    del binary["config"]["paths"]["baseline_roots"]  # a record from before the option
    binary["key"]["init_from"] = None
    assert describe_gap(binary).startswith("no matching full-precision run found")
