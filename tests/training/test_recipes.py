"""Training recipes (conf/recipe/): fine-tuning from fp and two-stage training (binary
activations first, then binary weights from that run), and what they put in the run key."""

from __future__ import annotations

import pytest
import torch
from omegaconf import OmegaConf

from abc_lab.errors import UserError
from abc_lab.models import build_model
from abc_lab.quant import QuantConfig, quantize_model
from abc_lab.reports import build_groups
from abc_lab.runs import load_runs
from abc_lab.runs.key import derive_key, setup_of, variant_of
from abc_lab.training.checkpoints import quantize_from
from abc_lab.training.precheck import quick_checks
from abc_lab.training.train import quant_config, record_key, train

from .conftest import move_run

SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}


def test_recipes_compose(compose_cfg):
    cfg, _ = compose_cfg("recipe=finetune", "init_from=/runs/fp")
    assert cfg.recipe.name == "finetune" and cfg.optim.name == "sgd" and cfg.optim.lr == 0.01
    assert OmegaConf.to_container(cfg.module.param_groups.binary) == {
        "optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0,
    }  # fmt: skip
    assert cfg.module.param_groups.float is None and cfg.init_from == "/runs/fp"
    cfg, _ = compose_cfg("recipe=two_stage_1", "quant.N=2", "init_from=/runs/fp")
    assert cfg.quant.name == "abc_act_only" and cfg.quant.N == 2 and cfg.optim.lr == 0.01
    assert cfg.module.param_groups.binary is None
    cfg, _ = compose_cfg("recipe=two_stage_1", "quant=sign_act_only", "init_from=/runs/fp")
    assert cfg.quant.name == "sign_act_only"  # the command line picks another stage 1
    cfg, _ = compose_cfg("recipe=two_stage_2", "quant.M=2", "init_from=/runs/stage1")
    assert cfg.recipe.name == "two_stage_2" and cfg.quant.name == "abc" and cfg.quant.M == 2
    assert cfg.module.param_groups.binary.optimizer == "adam" and cfg.optim.lr == 0.01


@pytest.mark.parametrize("recipe", ["finetune", "two_stage_1", "two_stage_2"])
def test_recipes_need_init_from(compose_cfg, recipe):
    cfg, _ = compose_cfg(f"recipe={recipe}")
    with pytest.raises(UserError, match=f"recipe={recipe} needs init_from; pass init_from="):
        quick_checks(cfg)


def test_stage_1_checkpoint_seeds_stage_2():
    """init_from a binary-activation run: its float weights and its v, β carry over; the
    weight quantizer starts fresh; another N is refused in one line."""
    torch.manual_seed(0)
    stage1 = quantize_model(build_model(**SPEC), QuantConfig(name="abc_act_only", N=2))
    with torch.no_grad():
        for name, p in stage1.named_parameters():
            if "input_quantizer" in name:
                p.add_(0.1 * torch.randn_like(p))  # trained away from the initial v, β
    state = stage1.state_dict()
    stage2 = quantize_from(
        build_model(**SPEC), state, QuantConfig(name="abc", M=3, N=2), "init_from", "s1"
    )
    fresh = quantize_model(build_model(**SPEC), QuantConfig(name="abc", M=3, N=2)).state_dict()
    after = stage2.state_dict()
    for k, v in after.items():
        if "kernel_quantizer" in k:
            assert k not in state and torch.equal(v, fresh[k]), k
        else:
            assert torch.equal(v, state[k]), k
    assert any("input_quantizer.v" in k for k in after) and any(
        "kernel_quantizer" in k for k in after
    )
    with pytest.raises(
        UserError, match="input_quantizer.v' of shape \\(2,\\), this run's quantizer needs \\(3,\\)"
    ):
        quantize_from(
            build_model(**SPEC), state, QuantConfig(name="abc", M=3, N=3), "init_from", "s1"
        )


@pytest.mark.slow
def test_two_stage_chain_of_short_runs(compose_cfg, tmp_path):
    cfg, run_dir = compose_cfg("quant=fp", "test=false")
    assert train(cfg, run_dir)["status"] == "finished"
    fp_dir = move_run(run_dir, tmp_path / "fp")
    cfg, run_dir = compose_cfg(
        "recipe=two_stage_1", "quant.N=2", f"init_from={fp_dir}", "test=false"
    )
    stage1 = train(cfg, run_dir)
    assert stage1["status"] == "finished" and stage1["quant"]["label"] == "abc(fp,2)"
    assert stage1["init"]["source"]["run"] == "fp"
    stage1_dir = move_run(run_dir, tmp_path / "stage1")
    cfg, run_dir = compose_cfg(
        "recipe=two_stage_2", "quant.M=2", "quant.N=2", f"init_from={stage1_dir}"
    )
    stage2 = train(cfg, run_dir)
    assert stage2["status"] == "finished" and stage2["quant"]["label"] == "abc(2,2)"
    assert stage2["init"]["source"]["run"] == "abc(fp,2)"
    assert stage2["metrics"]["test"]["acc1"] is not None
    # stage 2 started from stage 1's learned activation parameters
    for layer, params in stage1["quant_params"].items():
        assert stage2["quant_params_init"][layer]["v"] == pytest.approx(params["v"])
        assert stage2["quant_params_init"][layer]["beta"] == pytest.approx(params["beta"])
    assert stage2["key"]["module.param_groups.binary.optimizer"] == "adam"
    assert "recipe.name" not in stage2["key"]
    assert stage2["init"]["source"]["fp_variant"] == stage1["init"]["source"]["variant"]
    move_run(run_dir, tmp_path / "stage2")

    # both stages are compared with the fp run at the start of the chain, their recipe named;
    # a binary run from scratch with the same lr as the recipe has no baseline
    cfg, run_dir = compose_cfg("quant=abc", "quant.M=2", "quant.N=2", "optim.lr=0.01")
    assert train(cfg, run_dir)["status"] == "finished"
    groups = build_groups(load_runs([tmp_path]).runs)
    chained = next(g for g in groups if g.baseline is not None)
    assert chained.first is not None and chained.first.is_fp
    assert sorted(r.label for r in chained.rows) == ["abc(2,2)", "abc(fp,2)"]
    assert all(r.gap is not None for r in chained.rows)
    assert any("optim.lr 0.01 vs 0.1" in note for note in chained.notes), chained.notes
    (scratch,) = [g for g in groups if g is not chained]
    assert scratch.baseline is None and [r.label for r in scratch.rows] == ["abc(2,2)"]


def test_recipe_distill_and_param_group_fields_are_in_the_key(compose_cfg):
    def key(*overrides: str) -> dict:
        cfg, _ = compose_cfg(*overrides)
        return record_key(cfg, quant_config(cfg))

    plain = key()
    for name in ("module.distill.teacher", "module.distill.temperature", "module.distill.weight",
                 "module.distill.feature_weight", "module.distill.feature_layers",
                 "module.param_groups.binary", "module.param_groups.quant",
                 "module.param_groups.float"):  # fmt: skip
        assert name in plain, name
    assert not any(k.startswith("recipe") for k in plain)  # the name is not, its settings are
    finetune = key("recipe=finetune", "init_from=/runs/fp/best.ckpt")
    assert finetune["module.param_groups.binary.optimizer"] == "adam"
    assert finetune["module.param_groups.binary.lr"] == 1e-4 and finetune["optim.lr"] == 0.01
    assert setup_of(finetune) != setup_of(key("init_from=/runs/fp/best.ckpt"))
    binary = "module.param_groups.binary={optimizer:adam,lr:1.0e-4,weight_decay:0.0}"
    by_hand = key("init_from=/runs/fp/best.ckpt", "optim.lr=0.01", binary)
    assert by_hand == finetune  # the same settings without the recipe: the same run
    stage1 = key("recipe=two_stage_1", "init_from=/runs/fp/best.ckpt")
    assert stage1["quant.name"] == "abc_act_only" and "quant.M" not in stage1
    # a run with distillation is never grouped with one without, nor compared as its setup
    distilled = key("module.distill.teacher=/runs/fp/checkpoints/best.ckpt")
    assert distilled["module.distill.teacher"] == "/runs/fp/checkpoints/best.ckpt"
    assert variant_of(distilled) != variant_of(plain) and setup_of(distilled) != setup_of(plain)
    softer = key(
        "module.distill.teacher=/runs/fp/checkpoints/best.ckpt", "module.distill.temperature=8"
    )
    assert variant_of(softer) != variant_of(distilled)
    seed1 = key("module.distill.teacher=/runs/fp/checkpoints/best.ckpt", "seed=1")
    assert variant_of(seed1) == variant_of(distilled)  # one teacher, two seeds: one configuration


def test_older_records_count_as_without_distillation_and_groups():
    """A record written before these fields existed matches a new run that uses neither."""
    config = {"module": {"label_smoothing": 0.0,
                         "distill": {"teacher": None, "temperature": 4.0, "weight": 0.5,
                                     "feature_weight": 0.0, "feature_layers": None},
                         "param_groups": {"binary": None, "quant": None, "float": None}},
              "optim": {"lr": 0.1}, "seed": 0}  # fmt: skip
    new = derive_key(config, ())
    old = {
        k: v for k, v in new.items() if not k.startswith(("module.distill", "module.param_groups"))
    }
    assert setup_of(new) == setup_of(old) and variant_of(new) == variant_of(old)
    changed = derive_key({**config, "module": {**config["module"], "distill": {
        **config["module"]["distill"], "teacher": "/t.ckpt"}}}, ())  # fmt: skip
    assert setup_of(changed) != setup_of(old)


def test_activation_calibration_starts_the_run_from_fitted_v_and_beta(
    compose_cfg, tmp_path, monkeypatch
):
    cfg, run_dir = compose_cfg("quant=fp", "test=false")
    assert train(cfg, run_dir)["status"] == "finished"
    fp_dir = move_run(run_dir, tmp_path / "fp")
    cfg, run_dir = compose_cfg(
        "quant=abc", "quant.M=2", "quant.N=2", "quant.act_calibration=beta",
        f"init_from={fp_dir}", "test=false",
    )  # fmt: skip
    record = train(cfg, run_dir)
    assert record["status"] == "finished" and record["key"]["quant.act_calibration"] == "beta"
    calibration = record["init"]["act_calibration"]
    assert calibration["mode"] == "beta" and calibration["batches"] >= 1
    layers = calibration["layers"]
    assert len(layers) == 18
    assert all(f["error_after"] < f["error_before"] for f in layers.values())
    assert all(0 < f["window_before"] <= 1 and 0 < f["window_after"] <= 1 for f in layers.values())
    assert not any("bn_scale" in f for f in layers.values())  # only shifts_bn rescales
    # training started from the fitted β, not 1/N; the shifts were left as initialised
    start = record["quant_params_init"]
    assert any(p["beta"] != pytest.approx([0.5, 0.5]) for p in start.values())
    assert all(p["v"] == pytest.approx([-0.5, 1.5]) for p in start.values())
    # resuming continues from the checkpoint: no second calibration, the record keeps the first
    import abc_lab.training.train as training

    def refuse(*_args, **_kwargs):
        raise AssertionError("a resumed run was calibrated again")

    monkeypatch.setattr(training, "calibrate_activations", refuse)
    cfg, run_dir = compose_cfg(
        "quant=abc", "quant.M=2", "quant.N=2", "quant.act_calibration=beta",
        f"init_from={fp_dir}", "test=false", "trainer.max_epochs=2", "ckpt_path=last",
    )  # fmt: skip
    resumed = train(cfg, run_dir)
    assert resumed["status"] == "finished" and resumed["epochs_done"] == 2
    assert resumed["init"]["act_calibration"] == calibration
    assert resumed["quant_params_init"] == start


def test_calibration_keeps_the_random_state_of_the_run(compose_cfg):
    from abc_lab.training.train import calibrate

    cfg, _ = compose_cfg("quant=abc", "quant.M=2", "quant.N=2", "data.augment=true")
    from hydra.utils import instantiate

    data = OmegaConf.to_container(cfg, resolve=True)["data"]
    dm = instantiate({k: v for k, v in data.items() if k != "name"})
    model = quantize_model(build_model(**SPEC), QuantConfig(name="abc", M=2, N=2))
    torch.manual_seed(5)
    state = torch.random.get_rng_state()
    calibrate(model, dm, "shifts")
    assert torch.equal(torch.random.get_rng_state(), state)


def test_calibration_is_in_the_key_and_older_records_count_as_without():
    config = {"quant": {"name": "abc", "M": 3, "N": 3, "act_calibration": None}, "seed": 0}
    fields = QuantConfig(name="abc").used_fields()
    new = derive_key(config, fields)
    old = {k: v for k, v in new.items() if k != "quant.act_calibration"}
    assert setup_of(new) == setup_of(old) and variant_of(new) == variant_of(old)
    fitted = derive_key({**config, "quant": {**config["quant"], "act_calibration": "beta"}}, fields)
    assert variant_of(fitted) != variant_of(old)
