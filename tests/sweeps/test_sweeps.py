"""Sweeps: Hydra multirun summaries (basic and submitit_local launchers), offline W&B sweeps
with W&B's engine (bayes proposals, --count, resume after a kill, hyperband), the online
agent's plumbing, and the rejection of bad sweep files before any run starts.

Real `abc-lab train` jobs run shrunk (1 epoch, a few batches of Fashion-MNIST); the
hyperband and online tests use a tiny scripted trainer that writes real run records, so
their outcome is deterministic and needs no server.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import pytest

from abc_lab.commands import sweep as cli
from abc_lab.sweeps.metrics import metric_history, read_record
from abc_lab.sweeps.spec import SpecError, load_spec

REPO = Path(__file__).resolve().parents[2]
SHRINK = [
    "trainer.max_epochs=1",
    "+trainer.limit_train_batches=3",
    "+trainer.limit_val_batches=2",
    "+trainer.limit_test_batches=2",
    "data.train_subset=512",
    "data.batch_size=32",
    "data.eval_batch_size=64",
    "logger=csv",
    "kernel=eager",
]
ENV = {**os.environ, "ABC_LAB_KERNEL": "eager", "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
COMMAND = """command:
  - ${env}
  - abc-lab
  - train
  - ${args_no_hyphens}
"""


def abc_lab(*args: str, cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    """Run `abc-lab ...` with the interpreter running the tests."""
    return subprocess.run(
        [sys.executable, "-m", "abc_lab.cli", *args],
        cwd=cwd,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def engine():
    """W&B's sweep engine (the optional extra 'sweeps'), or skip: offline sweeps need it."""
    from abc_lab.sweeps.offline import import_engine
    from abc_lab.sweeps.spec import SpecError

    try:
        return import_engine()
    except SpecError as exc:
        pytest.skip(str(exc))


def running(pid: int) -> bool:
    """Whether a process runs (a zombie, finished but not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def state_of(sweep_dir: Path) -> dict:
    return json.loads((sweep_dir / "sweep.json").read_text())


# ---- Hydra multirun ---------------------------------------------------------------------------
@pytest.mark.slow
def test_multirun_records_a_failing_job_and_summarises(tmp_path: Path) -> None:
    """2 jobs; model.num_classes=2 crashes in the first training step (labels go up to 9)."""
    sweep = tmp_path / "mr"
    res = abc_lab(
        "train",
        "-m",
        *SHRINK,
        "quant=fp",
        "model.num_classes=10,2",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert res.returncode == 1, res.stderr[-2000:]  # not all jobs succeeded, after the summary
    assert "1 of 2 jobs did not finish" in res.stdout
    summary = json.loads((sweep / "summary.json").read_text())
    jobs = {Path(j["job_dir"]).name: j for j in summary["jobs"]}
    assert summary["counts"] == {"failed": 1, "finished": 1}
    ok = next(j for j in jobs.values() if "model.num_classes=10" in j["overrides"])
    bad = next(j for j in jobs.values() if "model.num_classes=2" in j["overrides"])
    assert ok["status"] == "finished" and 0.0 <= ok["test_acc1"] <= 1.0 and ok["epochs"] == 1
    assert bad["status"] == "failed" and "out of bounds" in bad["error"]
    assert read_record(Path(bad["job_dir"]))["status"] == "failed"
    md = (sweep / "summary.md").read_text()
    assert "| job dir | overrides | status |" in md and "model.num_classes=2" in md
    assert (sweep / "report" / "report.md").is_file()


@pytest.mark.slow
def test_submitit_local_launcher_multirun(tmp_path: Path) -> None:
    sweep = tmp_path / "mr"
    res = abc_lab(
        "train",
        "-m",
        "hydra/launcher=submitit_local",
        *SHRINK,
        "quant=fp",
        "seed=0,1",
        f"hydra.sweep.dir={sweep}",
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert (sweep / ".submitit").is_dir()  # the jobs really went through submitit
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2}
    assert sorted(j["overrides"][-1] for j in summary["jobs"]) == ["seed=0", "seed=1"]


# ---- offline W&B sweeps -----------------------------------------------------------------------
@pytest.mark.slow
def test_offline_bayes_sweep_proposes_feeds_back_and_stops_at_count(tmp_path: Path) -> None:
    sweeps = engine()
    spec = write(
        tmp_path / "tiny.yaml",
        textwrap.dedent("""\
        method: bayes
        metric: {name: val/acc1, goal: maximize}
        parameters:
          optim.lr: {distribution: log_uniform_values, min: 0.001, max: 0.2}
          schedule: {values: [cosine, constant]}
        """)
        + COMMAND,
    )
    sweep = tmp_path / "sweep"
    args = ("sweep", str(spec), "--count", "2", "--sweep-dir", str(sweep), *SHRINK, "quant=fp")
    res = abc_lab(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    state = state_of(sweep)
    runs = state["runs"]
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert runs[0]["params"]["optim.lr"] != runs[1]["params"]["optim.lr"]
    for run in runs:
        assert 0.001 <= run["params"]["optim.lr"] <= 0.2
        assert run["params"]["schedule"] in ("cosine", "constant")
        record = read_record(Path(run["run_dir"]))
        assert record["status"] == "finished"
        assert record["config"]["optim"]["lr"] == pytest.approx(run["params"]["optim.lr"])
        assert record["config"]["schedule"]["name"] == run["params"]["schedule"]
        assert record["key"]["quant.name"] == "fp"  # the extra overrides reached every run
        assert metric_history(record)[0]["val/acc1"] == record["history"][0]["val_acc1"]
    # what the engine is fed: the runs' measured metric, so a third proposal can use it
    from abc_lab.sweeps.offline import OfflineSweep

    engine_view = OfflineSweep(load_spec(spec, [*SHRINK, "quant=fp"]), sweep)
    fed = engine_view.engine.engine_runs(state["runs"])
    assert all(r.state == sweeps.RunState.finished and r.metric_history("val/acc1") for r in fed)
    assert engine_view.engine.propose(state["runs"]) is not None
    assert (sweep / "summary.md").is_file() and (sweep / "report" / "report.md").is_file()
    # the same command again: the sweep is complete, nothing runs twice
    again = abc_lab(*args, cwd=tmp_path)
    assert again.returncode == 0 and "continuing sweep" in again.stdout
    assert [r["started_at"] for r in state_of(sweep)["runs"]] == [r["started_at"] for r in runs]


@pytest.mark.slow
def test_killed_offline_sweep_resumes_without_repeating_finished_runs(tmp_path: Path) -> None:
    engine()
    spec = write(
        tmp_path / "grid.yaml",
        textwrap.dedent("""\
        method: grid
        parameters:
          quant: {value: fp}
          seed: {values: [0, 1]}
        """)
        + COMMAND,
    )
    sweep = tmp_path / "sweep"
    args = ["sweep", str(spec), "--sweep-dir", str(sweep), *SHRINK]
    driver = subprocess.Popen(
        [sys.executable, "-m", "abc_lab.cli", *args],
        cwd=tmp_path,
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    second = None
    while time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.5)
        try:
            runs = state_of(sweep)["runs"]
        except (OSError, ValueError):
            continue
        record = read_record(sweep / "runs" / "run-001")
        if len(runs) == 2 and runs[1]["state"] == "running" and runs[1].get("pid") and record:
            second = runs[1]  # training, with a record: it continues from where it stopped
            break
    assert second is not None, "the sweep never reached its second run"
    first = runs[0]
    assert first["state"] == "finished"
    first_started = read_record(sweep / "runs" / "run-000")["started_at"]
    second_started = read_record(sweep / "runs" / "run-001")["started_at"]
    driver.send_signal(signal.SIGKILL)  # the worst case: no chance to clean up
    driver.wait()
    for _ in range(120):  # its training process gets SIGTERM from the kernel and ends
        if not running(second["pid"]):
            break
        time.sleep(0.5)
    assert not running(second["pid"])
    assert state_of(sweep)["runs"][1]["state"] == "running"  # what the dead driver left

    res = abc_lab(*args, cwd=tmp_path)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    assert "re-running interrupted run-001 from its last checkpoint" in res.stdout
    runs = state_of(sweep)["runs"]
    assert [r["name"] for r in runs] == ["run-000", "run-001"]
    assert [r["state"] for r in runs] == ["finished", "finished"]
    assert runs[0]["started_at"] == first["started_at"]  # the finished run was not repeated
    assert read_record(sweep / "runs" / "run-000")["started_at"] == first_started
    assert [a["state"] for a in runs[1]["attempts"]] == ["interrupted"]
    assert runs[1]["command"][-1] == "ckpt_path=last"
    # resumed in its own directory: the same record (its start time kept), nothing set aside
    assert read_record(sweep / "runs" / "run-001")["started_at"] == second_started
    assert not (sweep / "interrupted").exists()
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2}


FAKE_TRAIN = '''
"""A scripted stand-in for `abc-lab train`: accuracy 0.1*M ramps up over the epochs."""
import json, os, sys, time
args = dict(a.split("=", 1) for a in sys.argv[1:])
run_dir = args["hydra.run.dir"].strip("'")
os.makedirs(run_dir, exist_ok=True)
M, epochs = int(args.get("quant.M", 3)), int(args.get("trainer.max_epochs", 4))
fail = os.environ.get("FAKE_TRAIN_FAILS_M") == str(M)
with open(os.path.join(os.path.dirname(run_dir), "..", "argv.log"), "a") as f:
    f.write(json.dumps(sys.argv[1:]) + "\\n")
rec = {"schema": "abc-lab/run-record", "version": 2, "status": "running", "error": None,
       "started_at": repr(time.time()),
       "run_dir": run_dir, "epochs_done": 0, "history": [], "wall_time_s": 0.0,
       "key": {"model.name": "fake", "data.name": "fake", "quant.name": "abc", "quant.M": M,
               "seed": 0},
       "quant": {"name": "abc", "label": f"abc({M},3)", "family": "multi-base",
                 "weight_bases": M, "activation_bases": 3, "fields": ["M"]},
       "metrics": {"val": None, "best_val": None, "test": None}}
def save():
    with open(run_dir + "/results.tmp", "w") as f:
        json.dump(rec, f)
    os.replace(run_dir + "/results.tmp", run_dir + "/results.json")
save()
if fail:
    sys.exit(3)
for e in range(epochs):
    time.sleep(0.4)
    acc = 0.1 * M * (e + 1) / epochs
    rec["history"].append({"epoch": e, "val_acc1": acc, "val_loss": 1 - acc})
    rec["metrics"]["val"] = {"acc1": acc, "acc5": acc, "loss": 1 - acc}
    rec["metrics"]["best_val"] = {"acc1": acc, "epoch": e}
    rec["epochs_done"] = e + 1
    save()
rec["status"] = "finished"
rec["metrics"]["test"] = {"acc1": acc, "acc5": acc, "loss": 1 - acc}
save()
'''


def fake_trainer(tmp_path: Path) -> list[str]:
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN, encoding="utf-8")
    return [sys.executable, str(script)]


def test_failed_runs_are_trained_again_only_with_retry_failed(tmp_path: Path) -> None:
    engine()
    import io

    from rich.console import Console

    from abc_lab.sweeps.offline import OfflineSweep

    spec_file = write(
        tmp_path / "grid.yaml",
        "method: grid\nparameters:\n  quant.M: {values: [1, 2]}\n" + COMMAND,
    )
    spec = load_spec(spec_file, ["trainer.max_epochs=2"], compose_check=False)
    fake = fake_trainer(tmp_path)
    sweep = tmp_path / "sweep"

    def sweep_once(env: dict[str, str], **options: bool) -> tuple[int, str]:
        out = io.StringIO()
        console = Console(file=out, width=200)
        runner = OfflineSweep(
            spec, sweep, console=console, poll_s=0.05, command=lambda: fake, env=env, **options
        )
        return runner.run(), out.getvalue()

    def states() -> list[str]:
        return [r["state"] for r in state_of(sweep)["runs"]]

    def trainings() -> int:
        return len((sweep / "argv.log").read_text().splitlines())

    assert sweep_once({"FAKE_TRAIN_FAILS_M": "2"})[0] == 1
    assert states() == ["finished", "failed"] and trainings() == 2
    first = read_record(sweep / "runs" / "run-000")["started_at"]

    code, out = sweep_once({})  # the same command again: failed stays failed
    assert code == 1 and states() == ["finished", "failed"] and trainings() == 2

    code, out = sweep_once({}, retry_failed=True)
    assert code == 0, out
    assert "run-001 failed before; training it again" in out
    assert states() == ["finished", "finished"] and trainings() == 3  # run-000 not again
    assert read_record(sweep / "runs" / "run-000")["started_at"] == first
    run = state_of(sweep)["runs"][1]
    assert [a["state"] for a in run["attempts"]] == ["failed"]
    assert "ckpt_path=last" not in run["command"]  # from the start, not from a checkpoint
    set_aside = read_record(sweep / "interrupted" / "run-001-1")
    assert set_aside is not None and set_aside["status"] == "failed"
    assert read_record(sweep / "runs" / "run-001")["status"] == "finished"


def test_hyperband_stops_a_lagging_run(tmp_path: Path) -> None:
    """Runs of M = 5, 4, 1: at the first band the M=1 run is below the better half, so
    hyperband stops it: its process is terminated and its record marked stopped."""
    engine()
    from rich.console import Console

    from abc_lab.sweeps.offline import OfflineSweep

    spec_file = write(
        tmp_path / "hb.yaml",
        textwrap.dedent("""\
        method: grid
        metric: {name: val/acc1, goal: maximize}
        early_terminate: {type: hyperband, min_iter: 1, eta: 2}
        parameters:
          quant.M: {values: [5, 4, 1]}
        """)
        + COMMAND,
    )
    sweep = tmp_path / "sweep"
    spec = load_spec(spec_file, ["trainer.max_epochs=6"])
    runner = OfflineSweep(
        spec,
        sweep,
        console=Console(file=open(os.devnull, "w")),
        poll_s=0.1,
        command=lambda: fake_trainer(tmp_path),
    )
    assert runner.run() == 0
    runs = state_of(sweep)["runs"]
    assert [r["state"] for r in runs] == ["finished", "finished", "stopped"]
    assert "Band" in runs[2]["stop_info"]
    stopped = read_record(sweep / "runs" / "run-002")
    assert stopped["status"] == "stopped" and stopped["epochs_done"] < 6
    assert read_record(sweep / "runs" / "run-000")["epochs_done"] == 6
    argv = [json.loads(line) for line in (sweep / "argv.log").read_text().splitlines()]
    assert argv[2][:2] == ["quant.M=1", "trainer.max_epochs=6"]  # parameters, then extras
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"finished": 2, "stopped": 1}


def test_grid_trains_each_distinct_configuration_once(tmp_path: Path) -> None:
    """fp ignores M: the grid quant in {fp, abc} x M in {1, 2} trains fp once, abc twice."""
    engine()
    from rich.console import Console

    from abc_lab.sweeps.offline import OfflineSweep

    spec_file = write(
        tmp_path / "bases.yaml",
        textwrap.dedent("""\
        method: grid
        parameters:
          quant: {values: [fp, abc]}
          quant.M: {values: [1, 2]}
        """)
        + COMMAND,
    )
    sweep = tmp_path / "sweep"
    runner = OfflineSweep(
        load_spec(spec_file, ["trainer.max_epochs=1"]),
        sweep,
        console=Console(file=open(os.devnull, "w")),
        poll_s=0.1,
        command=lambda: fake_trainer(tmp_path),
    )
    assert runner.run() == 0
    runs = state_of(sweep)["runs"]
    assert [(r["params"]["quant"], r["params"]["quant.M"], r["state"]) for r in runs] == [
        ("fp", 1, "finished"),
        ("fp", 2, "duplicate"),
        ("abc", 1, "finished"),
        ("abc", 2, "finished"),
    ]
    assert runs[1]["same_as"] == "run-000" and not (sweep / "runs" / "run-001").exists()
    assert len(json.loads((sweep / "summary.json").read_text())["jobs"]) == 3


def test_online_agent_runs_abc_lab_train_with_the_runs_parameters(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """wandb.sweep/wandb.agent stand-ins (no server here): the agent's function must start
    the same `abc-lab train` command as offline, with the proposal and the extra overrides."""
    import wandb
    import yaml

    from abc_lab.sweeps import online

    created = {}

    def fake_sweep(config: dict, project: str, entity: str | None) -> str:
        created.update(config=config, project=project)
        return "sw123"

    def fake_agent(sweep_id: str, function, count: int, project: str, entity: str | None):
        for i, m in enumerate([2, 5][:count]):
            params = tmp_path / f"config-{i}.yaml"
            params.write_text(yaml.safe_dump({"quant.M": {"value": m}}))
            monkeypatch.setenv("WANDB_RUN_ID", f"r{i}")
            monkeypatch.setenv("WANDB_SWEEP_PARAM_PATH", str(params))
            function()

    summaries = []

    class FakeRun:
        def __init__(self) -> None:
            self.summary: dict = {}

        def finish(self) -> None:
            summaries.append((os.environ["WANDB_RUN_ID"], self.summary))

    monkeypatch.setattr(wandb, "sweep", fake_sweep)
    monkeypatch.setattr(wandb, "agent", fake_agent)
    monkeypatch.setattr(wandb, "init", lambda **kwargs: FakeRun())
    spec_file = write(
        tmp_path / "on.yaml",
        textwrap.dedent("""\
        method: grid
        parameters:
          quant.M: {values: [2, 5]}
        """)
        + COMMAND,
    )
    spec = load_spec(spec_file, ["trainer.max_epochs=2"])
    sweep = tmp_path / "sweep"
    from rich.console import Console

    code = online.run_online(
        spec,
        sweep,
        2,
        "proj",
        console=Console(file=open(os.devnull, "w")),
        command=lambda: fake_trainer(tmp_path),
    )
    assert code == 0 and created["project"] == "proj"
    assert created["config"]["command"][-1] == "${args_no_hyphens}"
    argv = [json.loads(line) for line in (sweep / "argv.log").read_text().splitlines()]
    assert [a[:2] for a in argv] == [
        ["quant.M=2", "trainer.max_epochs=2"],
        ["quant.M=5", "trainer.max_epochs=2"],
    ]
    state = state_of(sweep)
    assert state["sweep_id"] == "sw123" and [r["state"] for r in state["runs"]] == ["finished"] * 2
    assert read_record(sweep / "runs" / "r1")["metrics"]["test"]["acc1"] == pytest.approx(0.5)
    # the W&B runs get every sweep metric from the record, best_val/acc1 included
    assert [run_id for run_id, _ in summaries] == ["r0", "r1"]
    assert summaries[1][1]["best_val/acc1"] == pytest.approx(0.5)


# ---- validation -------------------------------------------------------------------------------
GOOD = {"method": "grid", "parameters": {"quant.M": {"values": [1, 2]}}}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "method: sideways\nparameters: {quant.M: {values: [1]}}\n" + COMMAND,
            "'sideways' is not one of",  # W&B's own schema check
        ),
        (
            "method: grid\nparameters: {quant.bases: {values: [1]}}\n" + COMMAND,
            "parameter 'quant.bases' value 1 is not a valid override",
        ),
        (
            "method: grid\nparameters: {optim: {values: [sgd, lion]}}\n" + COMMAND,
            "Could not find 'optim/lion'",
        ),
        (
            "method: grid\nparameters: {quant.M: {values: [1, 2]\n" + COMMAND,
            "malformed YAML at line",
        ),
        (
            "method: bayes\nmetric: {name: val/acc, goal: maximize}\n"
            "parameters: {optim.lr: {min: 0.01, max: 0.1}}\n" + COMMAND,
            "unknown metric 'val/acc'",
        ),
        (
            "method: bayes\nparameters: {optim.lr: {min: 0.01, max: 0.1}}\n" + COMMAND,
            "bayes search needs a 'metric'",
        ),
        (
            "method: grid\nparameters: {quant.M: {values: [1]}}\ncommand: [python, train.py]\n",
            "'command' must run 'abc-lab train'",
        ),
        (
            "method: grid\nparamaters: {quant.M: {values: [1]}}\n" + COMMAND,
            "'paramaters' was unexpected",  # W&B's own schema check
        ),
        (
            "method: random\nmetric: {name: test/acc1, goal: maximize}\n"
            "early_terminate: {type: hyperband, min_iter: 1}\n"
            "parameters: {optim.lr: {min: 0.01, max: 0.1}}\n" + COMMAND,
            "test/acc1 is not one; use val/acc1",
        ),
    ],
    ids=[
        "method",
        "parameter",
        "group-option",
        "yaml",
        "metric",
        "no-metric",
        "command",
        "top-key",
        "hyperband-metric",
    ],
)
def test_bad_sweep_files_are_rejected_before_any_run(
    tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str
) -> None:
    spec = tmp_path / "bad.yaml"
    spec.write_text(text, encoding="utf-8")
    sweep = tmp_path / "sweep"
    code = cli.main([str(spec), "--count", "1", "--sweep-dir", str(sweep)])
    err = capsys.readouterr().err
    assert code == 2
    assert message in " ".join(err.split()), err
    assert err.strip().startswith("error:") and str(spec) in " ".join(err.split())
    assert not sweep.exists()  # nothing ran


def test_extra_overrides_are_checked_too(tmp_path: Path) -> None:
    spec = write(
        tmp_path / "ok.yaml", "method: grid\nparameters: {quant.M: {values: [1]}}\n" + COMMAND
    )
    with pytest.raises(SpecError, match="quant.M is a parameter of the sweep"):
        load_spec(spec, ["quant.M=3"])
    with pytest.raises(SpecError, match="extra overrides trainer.max_epoch=2 are not valid"):
        load_spec(spec, ["trainer.max_epoch=2"])
    with pytest.raises(SpecError, match="chooses each run's directory"):
        load_spec(spec, ["hydra.run.dir=/tmp/x"])
    assert load_spec(spec, ["trainer.max_epochs=2"]).run_overrides({"quant.M": 1}) == [
        "quant.M=1",
        "trainer.max_epochs=2",
    ]


@pytest.mark.parametrize("name", sorted(p.stem for p in (REPO / "sweeps").glob("*.yaml")))
def test_shipped_sweep_definitions_are_valid(name: str) -> None:
    spec = load_spec(REPO / "sweeps" / f"{name}.yaml")
    assert spec.raw["command"] == ["${env}", "abc-lab", "train", "${args_no_hyphens}"]
    assert spec.raw.get("program") == "abc-lab"
    if name == "bases":
        assert spec.grid_size() == 2 * 5 * 3
    if name == "schedules":
        assert spec.method == "bayes" and spec.early_terminate["type"] == "hyperband"


def test_offline_random_sweep_needs_a_count(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = write(
        tmp_path / "r.yaml",
        "method: random\nparameters: {optim.lr: {min: 0.01, max: 0.1}}\n" + COMMAND,
    )
    assert cli.main([str(spec), "--sweep-dir", str(tmp_path / "s")]) == 2
    assert "pass --count K" in capsys.readouterr().err


def test_where_prints_the_sweep_dir_the_same_command_uses(
    capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from abc_lab.sweeps.offline import default_sweep_dir

    monkeypatch.chdir(tmp_path)
    file = REPO / "sweeps" / "fmnist_study.yaml"
    assert cli.main([str(file), "--where"]) == 0
    plain = capsys.readouterr().out.strip()
    assert plain == str(default_sweep_dir(load_spec(file)))
    assert plain.startswith("multirun/sweeps/fmnist_study-")
    assert cli.main([str(file), "--where", "trainer.max_epochs=2"]) == 0
    assert capsys.readouterr().out.strip() not in ("", plain)  # other overrides, other dir
    assert cli.main([str(file), "--where", "--sweep-dir", "x/y"]) == 0
    assert capsys.readouterr().out.strip() == "x/y"
    assert not (tmp_path / "multirun").exists()  # nothing was created


SWEEP_DRIVER = """
import sys
from pathlib import Path
from rich.console import Console
from abc_lab.sweeps.offline import OfflineSweep
from abc_lab.sweeps.spec import load_spec
spec = load_spec(sys.argv[1], ["trainer.max_epochs=2"], compose_check=False)
command = [sys.executable, sys.argv[3]]
runner = OfflineSweep(spec, Path(sys.argv[2]), poll_s=0.1, command=lambda: command)
sys.exit(runner.run())
"""


@pytest.mark.faults
@pytest.mark.parametrize("fault", ["run_started:2", "run_ended:1", "summary"])
def test_sweep_driver_killed_anywhere_resumes_without_repeating_finished_runs(
    tmp_path: Path, fault: str
) -> None:
    engine()
    spec = write(
        tmp_path / "grid.yaml",
        "method: grid\nparameters:\n  quant.M: {values: [1, 2, 3]}\n" + COMMAND,
    )
    driver = tmp_path / "driver.py"
    driver.write_text(SWEEP_DRIVER)
    fake = fake_trainer(tmp_path)[1]
    sweep = tmp_path / "sweep"
    argv = [sys.executable, str(driver), str(spec), str(sweep), fake]
    killed = subprocess.run(
        argv, cwd=tmp_path, env={**ENV, "ABC_LAB_SWEEP_FAULT": fault}, capture_output=True
    )
    assert killed.returncode == -9
    before = {
        r["name"]: read_record(Path(r["run_dir"]))["started_at"]
        for r in state_of(sweep)["runs"]
        if r.get("run_dir")
        and read_record(Path(r["run_dir"]))
        and read_record(Path(r["run_dir"]))["status"] == "finished"
    }
    assert before  # at least the first run had finished

    again = subprocess.run(argv, cwd=tmp_path, env=ENV, capture_output=True, text=True)
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    runs = state_of(sweep)["runs"]
    assert [r["params"]["quant.M"] for r in runs] == [1, 2, 3]
    assert [r["state"] for r in runs] == ["finished"] * 3
    for name, started in before.items():  # finished before the kill: not trained again
        run = next(r for r in runs if r["name"] == name)
        assert read_record(Path(run["run_dir"]))["started_at"] == started
    if fault == "run_ended:1":  # it had finished when the driver died: adopted, not re-run
        assert not (sweep / "interrupted").exists()
    summary = json.loads((sweep / "summary.json").read_text())
    assert summary["counts"] == {"finished": 3}
    started = [json.loads(line) for line in (sweep / "argv.log").read_text().splitlines()]
    per_m = Counter(next(a for a in args if a.startswith("quant.M=")) for args in started)
    # each run trained once; the run the driver died starting (its process dies with the
    # driver) may have started once before, if it got as far as logging its argv
    assert per_m["quant.M=1"] == per_m["quant.M=3"] == 1
    assert per_m["quant.M=2"] in ((1, 2) if fault == "run_started:2" else (1,))
