"""module.param_groups: binary, quant and float parameters with optimizers of their own, held
together as one optimizer that LR schedules and checkpoints see whole."""

from __future__ import annotations

import copy
import functools
import io

import pytest
import torch

from abc_lab.configs import config_dir
from abc_lab.errors import UserError
from abc_lab.models import build_model
from abc_lab.quant import QuantConv2d, QuantLinear, quantize_model
from abc_lab.training.optimizers import (
    GroupedOptimizer,
    build_optimizer,
    resolve_group_settings,
    split_parameters,
)
from abc_lab.training.schedules import cosine
from abc_lab.training.train import train

SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}
SGD = functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4)


def _model(quant: str = "abc") -> torch.nn.Module:
    torch.manual_seed(0)
    return quantize_model(build_model(**SPEC), quant)


def _groups(settings, main=SGD):
    return resolve_group_settings(settings, main, config_dir())


def _by_name(optimizer: torch.optim.Optimizer) -> dict[str, dict]:
    return {g["name"]: g for g in optimizer.param_groups}


def test_without_param_groups_the_optimizer_is_unchanged():
    model = _model()
    for settings in (None, {"binary": None, "quant": None, "float": None}):
        opt = build_optimizer(model, SGD, _groups(settings), quant_lr_scale=0.5)
        assert type(opt) is torch.optim.SGD
        decay, no_decay, quant = opt.param_groups
        assert decay["weight_decay"] == 5e-4 and decay["lr"] == 0.1
        assert no_decay["weight_decay"] == 0.0 and no_decay["lr"] == 0.1
        assert quant["weight_decay"] == 0.0 and quant["lr"] == pytest.approx(0.05)
        assert all(p.ndim > 1 for p in decay["params"])
        assert all(p.ndim <= 1 for p in no_decay["params"])
        names = {id(p): n for n, p in model.named_parameters()}
        assert all("quantizer." in names[id(p)] for p in quant["params"])


def test_groups_get_their_parameters_settings_and_optimizer_class():
    model = _model()
    settings = {"binary": {"optimizer": "adam", "lr": 1e-4, "weight_decay": 0.0},
                "quant": {"optimizer": "RMSprop", "lr": 0.02}, "float": None}  # fmt: skip
    opt = build_optimizer(model, SGD, _groups(settings), quant_lr_scale=0.5)
    assert isinstance(opt, GroupedOptimizer) and isinstance(opt, torch.optim.Optimizer)
    classes = {type(o) for o in opt.optimizers}
    assert classes == {torch.optim.SGD, torch.optim.Adam, torch.optim.RMSprop}
    groups = _by_name(opt)
    assert set(groups) == {"binary", "quant/no_decay", "float", "float/no_decay"}
    # binary: exactly the latent weights of layers whose weights are quantized, by Adam
    binary = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, QuantConv2d | QuantLinear) and m.kernel_quantizer is not None
    }
    assert {id(p) for p in groups["binary"]["params"]} == binary and len(binary) == 18
    adam = next(o for o in opt.optimizers if type(o) is torch.optim.Adam)
    assert adam.param_groups == [groups["binary"]]
    assert groups["binary"]["lr"] == 1e-4 and groups["binary"]["weight_decay"] == 0.0
    assert groups["binary"]["betas"] == (0.9, 0.999)  # conf/optim/adam.yaml's defaults beneath
    # quant: v and β by RMSprop at its lr times quant_lr_scale, never with weight decay
    names = {id(p): n for n, p in model.named_parameters()}
    assert all("quantizer." in names[id(p)] for p in groups["quant/no_decay"]["params"])
    assert groups["quant/no_decay"]["lr"] == pytest.approx(0.01)
    assert groups["quant/no_decay"]["weight_decay"] == 0.0
    # float: the main optimizer, decay only for weights of more than one dimension
    sgd = next(o for o in opt.optimizers if type(o) is torch.optim.SGD)
    assert sgd.param_groups == [groups["float"], groups["float/no_decay"]]
    assert groups["float"]["lr"] == 0.1 and groups["float"]["weight_decay"] == 5e-4
    assert groups["float"]["nesterov"] is True
    assert groups["float/no_decay"]["weight_decay"] == 0.0
    assert names[id(groups["float"]["params"][0])] == "conv1.weight"  # the float stem
    # every trainable parameter exactly once
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    assert sorted(seen) == sorted(id(p) for p in model.parameters()) and len(set(seen)) == len(seen)


def test_one_optimizer_class_makes_a_plain_optimizer_with_group_settings():
    opt = build_optimizer(_model(), SGD, _groups({"binary": {"lr": 0.01, "nesterov": False}}))
    assert type(opt) is torch.optim.SGD
    groups = _by_name(opt)
    assert groups["binary"]["lr"] == 0.01 and groups["binary"]["nesterov"] is False
    assert groups["binary"]["momentum"] == 0.9  # the rest from the main optimizer
    assert groups["float"]["lr"] == 0.1


def test_split_of_an_activation_only_model_has_no_binary_weights():
    parts = split_parameters(_model("abc_act_only"))
    assert parts["binary"] == [] and parts["quant"] and parts["float"]


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"binary": {"optimizer": "lion9"}}, "neither an optimizer of conf/optim"),
        ({"binary": {"optimizer": "adam", "lrr": 1e-3}}, "binary.lrr is not a setting of Adam"),
        ({"quant": {"lr": -1.0}}, "SGD refuses"),
        ({"float": 3}, "must be null (the main optimizer) or a mapping"),
        ({"weights": None}, "module.param_groups.weights is not a parameter group"),
    ],
)
def test_bad_group_settings_are_user_errors(settings, words):
    with pytest.raises(UserError, match=words.replace("(", r"\(").replace(")", r"\)")) as err:
        _groups(settings)
    assert "\n" not in str(err.value)


def _grouped(model: torch.nn.Module) -> GroupedOptimizer:
    settings = {"binary": {"optimizer": "adam", "lr": 1e-3, "weight_decay": 0.0}}
    opt = build_optimizer(model, SGD, _groups(settings))
    assert isinstance(opt, GroupedOptimizer)
    return opt


def _train_steps(model, opt, steps: int, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(4, 1, 28, 28, generator=gen)
        y = torch.randint(0, 10, (4,), generator=gen)

        def closure(x=x, y=y):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.step(closure)


def test_scheduler_scales_every_group_by_the_same_factor():
    model = _model()
    opt = _grouped(model)
    sched = cosine(opt, total_steps=10, steps_per_epoch=5)
    initial = [g["lr"] for g in opt.param_groups]
    assert len(set(initial)) > 1  # groups start at different rates
    for _ in range(4):
        _train_steps(model, opt, 1)
        sched.step()
    factors = [g["lr"] / lr0 for g, lr0 in zip(opt.param_groups, initial, strict=True)]
    assert factors[0] < 1 and factors == pytest.approx([factors[0]] * len(factors))
    for child in opt.optimizers:  # the children's groups are the ones that changed
        for g in child.param_groups:
            assert g["lr"] == pytest.approx(g["initial_lr"] * factors[0])


def test_grouped_optimizer_state_round_trips():
    model = _model()
    opt = _grouped(model)
    _train_steps(model, opt, 2)
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)  # as in a checkpoint, read back with weights_only
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = copy.deepcopy(model)
    twin_opt = _grouped(twin)
    twin_opt.load_state_dict(saved)
    for a, b in zip(opt.optimizers, twin_opt.optimizers, strict=True):
        assert type(a) is type(b) and len(a.state) == len(b.state) > 0
        for pa, pb in zip(
            (p for g in a.param_groups for p in g["params"]),
            (p for g in b.param_groups for p in g["params"]),
            strict=True,
        ):
            for name, value in a.state[pa].items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(b.state[pb][name]))
    assert len(twin_opt.state) == len(opt.state)  # the chained view sees every child's state
    _train_steps(model, opt, 1, seed=7)
    _train_steps(twin, twin_opt, 1, seed=7)
    for pa, pb in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(pa, pb)
    with pytest.raises(ValueError, match="does not hold 2 optimizers"):
        twin_opt.load_state_dict({"optimizers": saved["optimizers"][:1]})


@pytest.mark.slow
def test_resume_restores_every_child_optimizer(compose_cfg, monkeypatch):
    """A run with two optimizer classes checkpoints both states, and resuming loads both."""
    groups = "module.param_groups.binary={optimizer:adam,lr:1.0e-3,weight_decay:0.0}"
    cfg, run_dir = compose_cfg("quant=abc", "quant.M=2", "quant.N=2", groups, "test=false")
    assert train(cfg, run_dir)["status"] == "finished"
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = torch.load(last, weights_only=True)["optimizer_states"][0]["optimizers"]
    assert [len(s["state"]) > 0 for s in saved] == [True, True]
    loaded = []
    real = GroupedOptimizer.load_state_dict

    def spy(self, state_dict):
        real(self, state_dict)
        kinds = [type(o).__name__ for o in self.optimizers]
        loaded.append((kinds, copy.deepcopy([o.state_dict() for o in self.optimizers])))

    monkeypatch.setattr(GroupedOptimizer, "load_state_dict", spy)
    cfg, run_dir = compose_cfg(
        "quant=abc", "quant.M=2", "quant.N=2", groups, "test=false",
        "trainer.max_epochs=2", "ckpt_path=last",
    )  # fmt: skip
    record = train(cfg, run_dir)
    assert record["status"] == "finished" and record["epochs_done"] == 2
    ((kinds, restored),) = loaded
    assert kinds == ["Adam", "SGD"]
    for child, state in zip(restored, saved, strict=True):
        assert set(child["state"]) == set(state["state"])
        for index, values in state["state"].items():
            for name, value in values.items():
                assert torch.equal(
                    torch.as_tensor(child["state"][index][name]), torch.as_tensor(value)
                )
        lrs = [g["lr"] for g in child["param_groups"]]
        assert lrs == [g["lr"] for g in state["param_groups"]]
