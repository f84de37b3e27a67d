"""The run key is complete: every config leaf of every option of every group in conf/ either
changes the key or is on the documented exclusion list (or is a quantizer field the chosen
quantizer does not read). A field added to conf/ tomorrow is covered without a code change."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict

from abc_lab.configs import config_dir
from abc_lab.quant import QuantConfig, list_quantizers
from abc_lab.runs.key import (
    EXCLUDED,
    QUANTIZER_FIELDS,
    SEED_FIELDS,
    TEACHER_FIELD,
    derive_key,
    differences,
    fine_tune_setup,
    flatten,
    is_excluded,
    matches,
    setup_of,
    variant_of,
)
from abc_lab.training.resolvers import register_resolvers

CONF = config_dir()
GROUPS = sorted(
    p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra" and any(p.glob("*.yaml"))
)
OPTIONS = [(g, f.stem) for g in GROUPS for f in sorted((CONF / g).glob("*.yaml"))]


CLASS_FOLDERS = Path("/tmp/abc-lab-key-test/classes")


def data_overrides(group: str, option: str) -> list[str]:
    """Class-folder datasets read their class count from folder names: give them folders."""
    if (group, option) not in (("data", "image_folder"), ("experiment", "forest_trail")):
        return []
    for name in ("left", "straight", "right"):
        (CLASS_FOLDERS / name).mkdir(parents=True, exist_ok=True)
    return [f"paths.data_dir={CLASS_FOLDERS}"]


def compose_config(*overrides: str) -> dict[str, Any]:
    """The resolved train config for ``overrides`` (init_from cleared and the distillation
    teacher a fixed path: variants look for a sibling run that a test has not trained; with a
    teacher, every distillation setting is live and must change the key)."""
    register_resolvers()
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = "/tmp/abc-lab-key-test/run"
        cfg.hydra.job.num = 0
        cfg.init_from = None
        cfg.module.distill.teacher = "/tmp/abc-lab-key-test/teacher"
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def quant_fields(config: dict[str, Any]) -> tuple[str, ...]:
    quant = {k: v for k, v in config["quant"].items() if k != "_target_"}
    return QuantConfig(**quant).used_fields()


def leaves(config: Any, path: tuple = ()) -> Any:
    """(path, value) of every leaf (keys may hold dots themselves, e.g. Hydra's)."""
    if isinstance(config, dict) and config:
        for name, value in config.items():
            yield from leaves(value, (*path, name))
    elif path:
        yield path, config


def set_leaf(config: dict[str, Any], path: tuple, value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(config)
    *parents, leaf = path
    node = changed
    for name in parents:
        node = node[name]
    node[leaf] = value
    return changed


def another_value(name: str, value: Any) -> Any:
    """A different value of the same kind."""
    if name == "quant.name":
        return next(q for q in list_quantizers() if q != value)
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value * 2 + 0.5
    if isinstance(value, str):
        return value + "_changed"
    if isinstance(value, list):
        return [*value, "extra"]
    return 7  # None -> a value


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_every_leaf_changes_the_key_or_is_excluded(group: str, option: str) -> None:
    config = compose_config(f"{group}={option}", *data_overrides(group, option))
    fields = quant_fields(config)
    key = derive_key(config, fields)
    unused = [f"quant.{n}" for n in config["quant"] if n not in (*fields, "name", "_target_")]
    forgotten = []
    for path, value in leaves(config):
        name = ".".join(path)
        changed = set_leaf(config, path, another_value(name, value))
        if derive_key(changed, fields) != key:
            continue
        if not (is_excluded(name) or name in unused):
            forgotten.append(name)
    assert not forgotten, f"{group}={option}: changing {forgotten} leaves the run key unchanged"


@pytest.mark.parametrize("group, option", OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_seed_and_baseline_rules_see_every_key_field(group: str, option: str) -> None:
    """Changing any key field but the seed makes another configuration; changing any key
    field but the quantizer's own, init_from and the seed makes another setup. The paths of
    init_from and of the teacher differ per seed: variants compare what they point at."""
    config = compose_config(f"{group}={option}", *data_overrides(group, option))
    fields = quant_fields(config)
    key = derive_key(config, fields)
    for name, value in key.items():
        other = {**key, name: another_value(name, value)}
        seedish = name in (*SEED_FIELDS, "init_from", TEACHER_FIELD)
        assert (variant_of(other) != variant_of(key)) != seedish, name
        in_setup = not matches(name, (*QUANTIZER_FIELDS, *SEED_FIELDS))
        assert (setup_of(other) != setup_of(key)) == in_setup, name


def test_every_exclusion_names_a_real_field() -> None:
    """No stale entries: each pattern of EXCLUDED matches a leaf of some composed config."""
    leaves: set[str] = set()
    for group, option in OPTIONS:
        leaves |= set(flatten(compose_config(f"{group}={option}", *data_overrides(group, option))))
    stale = [p for p in EXCLUDED if not any(matches(leaf, [p]) for leaf in leaves)]
    assert not stale, f"EXCLUDED patterns that match no config field: {stale}"


def test_fields_added_on_the_command_line_join_the_key() -> None:
    base = compose_config()
    limited = compose_config("+trainer.limit_train_batches=3")
    fields = quant_fields(base)
    assert "trainer.limit_train_batches" in derive_key(limited, fields)
    assert setup_of(derive_key(limited, fields)) != setup_of(derive_key(base, fields))


def test_quantizer_fields_the_quantizer_does_not_read_stay_out() -> None:
    fp3 = compose_config("quant=fp", "quant.M=3")
    fp5 = compose_config("quant=fp", "quant.M=5")
    assert derive_key(fp3, quant_fields(fp3)) == derive_key(fp5, quant_fields(fp5))
    abc3 = compose_config("quant=abc", "quant.M=3")
    abc5 = compose_config("quant=abc", "quant.M=5")
    assert derive_key(abc3, quant_fields(abc3)) != derive_key(abc5, quant_fields(abc5))


def test_fine_tuning_may_change_the_recipe_and_augmentation_but_not_the_data() -> None:
    """A binary run started from an fp run keeps that run's setup across its recipe (lr,
    epochs, training augmentation off), and loses it when the data change."""
    fp = compose_config("quant=fp")
    origin = json.dumps(variant_of(derive_key(fp, quant_fields(fp))), default=str)
    recipe = ("quant=xnor", "optim.lr=0.01", "trainer.max_epochs=3", "data.augment=false")
    tuned = compose_config(*recipe)
    assert fine_tune_setup(derive_key(tuned, quant_fields(tuned)), origin) is not None
    for data in ("data.batch_size=64", "data.train_subset=1000"):
        other = compose_config(*recipe, data)
        assert fine_tune_setup(derive_key(other, quant_fields(other)), origin) is None, data


def test_bnn_records_from_before_bnn_scale_match_bnn_without_a_scale() -> None:
    plain, scaled = (
        compose_config("quant=bnn"),
        compose_config("quant=bnn", "quant.bnn_scale=fan_in"),
    )
    new = derive_key(plain, quant_fields(plain))
    old = {k: v for k, v in new.items() if k != "quant.bnn_scale"}  # written before the field
    assert new["quant.bnn_scale"] == "none"
    assert differences(old, new, setup_only=False) == []
    assert differences(new, derive_key(scaled, quant_fields(scaled)), setup_only=False) == [
        "quant.bnn_scale none vs fan_in"
    ]
    xnor = compose_config("quant=xnor", "quant.bnn_scale=fan_in")  # read by bnn only
    assert "quant.bnn_scale" not in derive_key(xnor, quant_fields(xnor))


def test_exclusion_list_is_documented() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "run-record.md").read_text()
    missing = [p for p in EXCLUDED if f"`{p}`" not in doc]
    assert not missing, f"docs/run-record.md does not list {missing}"
