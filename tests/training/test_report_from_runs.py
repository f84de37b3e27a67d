"""A report built from real (shrunk) training runs: matching, seeds, missing baseline, files."""

from __future__ import annotations

import json
import statistics

import pytest

from abc_lab.quant import QuantConfig
from abc_lab.reports import build_groups, build_report
from abc_lab.runs import load_runs, read_run, setup_of
from abc_lab.training.train import record_key, train

from .conftest import run_cli


def _train(compose_cfg, tmp_path, name: str, *overrides: str) -> dict:
    cfg, _ = compose_cfg(*overrides, "test=true")
    return train(cfg, tmp_path / "runs" / name)


def test_report_from_real_runs(compose_cfg, tmp_path):
    fp = [_train(compose_cfg, tmp_path, f"fp{s}", "quant=fp", f"seed={s}") for s in (0, 1)]
    abc = _train(compose_cfg, tmp_path, "abc", "quant=abc", "quant.M=2", "quant.N=2")
    _train(compose_cfg, tmp_path, "xnor_2ep", "quant=xnor", "trainer.max_epochs=2")

    groups = build_groups(load_runs([tmp_path / "runs"]).runs)
    matched = next(g for g in groups if g.baseline is not None)
    base = matched.baseline
    assert base.seeds == [0, 1]
    fp_acc = [r["metrics"]["test"]["acc1"] for r in fp]
    assert base.top1.mean == pytest.approx(statistics.fmean(fp_acc))
    assert base.top1.std == pytest.approx(statistics.stdev(fp_acc))
    (row,) = [r for r in matched.rows if r.label == "abc(2,2)"]
    expected_gap = 100 * (abc["metrics"]["test"]["acc1"] - statistics.fmean(fp_acc))
    assert row.gap == pytest.approx(expected_gap)
    # the 2-epoch xnor run has no fp run with its schedule: it is not compared with the 1-epoch fp
    lonely = next(g for g in groups if any(r.label == "xnor" for r in g.rows))
    assert lonely.baseline is None
    assert any("trainer.max_epochs=2" in c and "quant=fp" in c for c in lonely.commands)

    out = build_report([tmp_path / "runs"], "real", out_root=tmp_path / "reports")
    md = (out / "report.md").read_text()
    html = (out / "report.html").read_text()
    assert "abc(2,2)" in md and "No full-precision baseline" in md
    figures = sorted(p.name for p in (out / "figures").glob("*.png"))
    assert figures and all(f"figures/{name}" in html for name in figures)
    assert json.loads((tmp_path / "runs" / "abc" / "results.json").read_text()) == abc

    # and the same through the console script
    res = run_cli("report", str(tmp_path / "runs"), "--name", "cli", "--out", "reports",
                  cwd=tmp_path)  # fmt: skip
    assert res.returncode == 0, res.stderr[-2000:]
    assert (tmp_path / "reports" / "cli" / "report.html").is_file()
    assert "abc(2,2)" in res.stdout


def test_runs_that_differ_in_any_option_are_never_mixed(compose_cfg, tmp_path):
    """Options the hand-listed key used to miss: β initialisation makes another configuration;
    a different number of training batches makes another setup, whose baseline is not the fp
    run trained on fewer batches, and the printed command (every override kept) trains it."""
    _train(compose_cfg, tmp_path, "fp", "quant=fp")
    _train(compose_cfg, tmp_path, "abc", "quant=abc", "quant.M=2", "quant.N=2")
    _train(compose_cfg, tmp_path, "abc_lsq", "quant=abc", "quant.M=2", "quant.N=2",
           "quant.beta_init=lsq")  # fmt: skip
    limited = ("quant=abc", "quant.M=2", "quant.N=2", "trainer.limit_train_batches=3")
    _train(compose_cfg, tmp_path, "abc_3_batches", *limited)

    groups = build_groups(load_runs([tmp_path / "runs"]).runs)
    matched = next(g for g in groups if g.baseline is not None)
    labels = sorted(r.label for r in matched.rows)
    assert labels == ["abc(2,2) [quant.beta_init=lsq]", "abc(2,2) [quant.beta_init=null]"]
    assert all(r.seeds == [0] for r in matched.rows)

    alone = next(g for g in groups if g.baseline is None)
    assert [r.run.path.parent.name for r in alone.rows] == ["abc_3_batches"]
    (command,) = alone.commands
    assert command.startswith("abc-lab train ") and command.endswith(" quant=fp seed=0")
    overrides = command.removeprefix("abc-lab train ").split()
    assert "trainer.limit_train_batches=3" in overrides
    assert not any(o.startswith(("quant.", "init_from")) for o in overrides)
    # the command, composed, is the fp twin of the limited run: same setup
    cfg, _ = compose_cfg(*overrides, shrink=False)
    fp_key = record_key(cfg, QuantConfig(name="fp"))
    limited_run = read_run(tmp_path / "runs" / "abc_3_batches")
    assert setup_of(fp_key) == limited_run.setup
    assert setup_of(fp_key) != read_run(tmp_path / "runs" / "fp").setup
