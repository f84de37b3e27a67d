"""A report built from real (shrunk) training runs: matching, seeds, missing baseline, files."""

from __future__ import annotations

import json
import statistics

import pytest

from abc_lab.reports import build_groups, build_report, load_runs
from abc_lab.training.train import train

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
