"""`abc-lab init-check`: binary configurations at a full-precision run's weights."""

from __future__ import annotations

import pytest

from abc_lab.cli import main
from abc_lab.errors import UserError
from abc_lab.initcheck import evaluate, init_check, parse_quant
from abc_lab.training.train import train


def test_init_check_quantizes_the_fp_weights_and_recalibrates_bn(compose_cfg, capsys, monkeypatch):
    cfg, run_dir = compose_cfg("quant=fp", "test=false")
    record = train(cfg, run_dir)
    inits = ["1/N", "lsq", "fit-beta", "fit-shifts"]
    results = init_check(run_dir, ["fp", "xnor", "abc:2:2"], inits, images=96)
    assert [(r.label, r.act_init) for r in results] == [
        ("fp", "—"),
        ("xnor", "—"),
        *[("abc(2,2)", init) for init in inits],
    ]
    for r in results:
        assert 0 <= r.top1_loaded <= 1 and 0 <= r.top1_recalibrated <= 1
        assert r.loss_loaded > 0 and r.loss_recalibrated > 0
    # fp "as loaded" is the run's own model: the same accuracy as evaluating it directly
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from abc_lab.training import checkpoints as ckpts

    saved = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    model = instantiate(saved["model"])
    state = ckpts.model_state(torch.load(record["checkpoints"]["best"], weights_only=True))
    model.load_state_dict(state)
    dm = instantiate({k: v for k, v in saved["data"].items() if k != "name"})
    dm.setup("fit")
    assert results[0].top1_loaded == evaluate(model, dm.val_dataloader(), 96)[0]
    # and the mean cross-entropy of those same 96 images, computed directly
    xs, ys = zip(*[(x, y) for x, y in dm.val_dataloader()], strict=True)
    x, y = torch.cat(xs)[:96], torch.cat(ys)[:96]
    model.eval()
    with torch.no_grad():
        direct = float(torch.nn.functional.cross_entropy(model(x), y))
    assert results[0].loss_loaded == pytest.approx(direct, rel=1e-4)

    monkeypatch.setenv("COLUMNS", "120")  # the table's content, whatever the terminal
    assert main(["init-check", str(run_dir), "--quant", "abc:1:1", "--images", "32",
                 "--recal-batches", "1", "--act-init", "lsq", "fit-beta"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "abc(1,1)" in out and "lsq" in out and "fit-beta" in out and "loss" in out
    assert "BatchNorm statistics recalibrated on 1 training batches" in " ".join(out.split())


@pytest.mark.parametrize(
    "spec, words", [("abc:3", "write abc:M:N"), ("xnor:1", "takes no base counts"),
                    ("abc:0:1", "M must be"), ("ternary", "unknown quantizer")]
)  # fmt: skip
def test_bad_quantizer_specs(spec, words):
    with pytest.raises(UserError, match=words):
        parse_quant(spec)


def test_init_check_needs_a_run(tmp_path, capsys):
    assert main(["init-check", str(tmp_path)]) == 2
    out = " ".join(capsys.readouterr().out.split())  # rich wraps long lines
    assert "neither a run directory nor a checkpoint" in out
