"""Study variants (conf/variant): composition, and binary runs that find their fp run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import OmegaConf, open_dict, read_write

from abc_lab.errors import UserError
from abc_lab.sweeps.spec import load_spec
from abc_lab.training.checkpoints import run_checkpoint
from abc_lab.training.train import active_teacher, quant_config, record_key, train

REPO = Path(__file__).resolve().parents[2]
VARIANTS = sorted(p.stem for p in (REPO / "conf" / "variant").glob("*.yaml"))
# variant -> (quantizer, M, N, seed, the variant it starts from)
EXPECTED = {
    "fp": ("fp", None, None, 0, None),
    "fp_seed1": ("fp", None, None, 1, None),
    "bnn": ("bnn", None, None, 0, "fp"),
    "bwn": ("bwn", None, None, 0, "fp"),
    "xnor": ("xnor", None, None, 0, "fp"),
    "abc_w3": ("abc", 3, 0, 0, "fp"),
    "abc_1_1": ("abc", 1, 1, 0, "fp"),
    "abc_3_1": ("abc", 3, 1, 0, "fp"),
    "abc_3_3": ("abc", 3, 3, 0, "fp"),
    "abc_5_3": ("abc", 5, 3, 0, "fp"),
    "abc_5_5": ("abc", 5, 5, 0, "fp"),
    "abc_3_3_seed1": ("abc", 3, 3, 1, "fp_seed1"),
}


def test_the_variant_files_are_the_expected_set():
    assert VARIANTS == sorted(EXPECTED)


def _composed(compose_cfg, experiment: str, name: str, expected: dict):
    """The variant composed in its study: quantizer, bases and seed as ``expected`` says;
    returns the config, the unresolved config and the variant it starts from."""
    cfg, _ = compose_cfg(f"experiment={experiment}", f"variant={name}", shrink=False)
    quant, m, n, seed, source = expected[name]
    assert cfg.variant == name and cfg.seed == seed and cfg.quant.name == quant
    if m is not None:
        assert (cfg.quant.M, cfg.quant.N) == (m, n)
    return cfg, OmegaConf.to_container(cfg, resolve=False), source


def fixed(spec) -> dict:
    """A sweep's fixed parameters (those given one value), by name."""
    return {k: v["value"] for k, v in spec.raw["parameters"].items() if "value" in v}


def _check_sweep_order(sweep: str, experiment: str, variants: list[str], expected: dict):
    """The sweep runs every variant once, each after the run it starts from."""
    spec = load_spec(REPO / "sweeps" / sweep)
    values = spec.raw["parameters"]["variant"]["values"]
    assert sorted(values) == variants and spec.grid_size() == len(variants)
    assert spec.raw["parameters"]["experiment"] == {"value": experiment}
    for i, name in enumerate(values):
        source = expected[name][4]
        assert source is None or values.index(source) < i, name


@pytest.mark.parametrize("name", VARIANTS)
def test_each_variant_composes_into_its_quantizer_seed_and_start(compose_cfg, name):
    cfg, raw, source = _composed(compose_cfg, "fmnist_study", name, EXPECTED)
    raw = raw["init_from"]
    if source is None:
        assert raw is None
    else:
        assert raw == f"${{sweep_run:{source},${{hydra:runtime.output_dir}}}}"
    # the study's fixed recipe is the same for every variant
    assert (cfg.trainer.max_epochs, cfg.trainer.precision) == (8, "bf16-mixed")
    assert (cfg.optim.name, cfg.optim.lr, cfg.schedule.name, cfg.data.augment) == (
        "sgd",
        0.1,
        "cosine",
        True,
    )


def test_study_sweep_lists_every_variant_after_the_run_it_starts_from():
    _check_sweep_order("fmnist_study.yaml", "fmnist_study", VARIANTS, EXPECTED)


STUDY2 = REPO / "conf" / "variant" / "recipe_study"
# Files there that are not the recipe study's variants: settings the variants include, and
# the variants of later studies (checked by test_eighth_recipe_study_... and
# test_tenth_recipe_study_...).
STUDY2_SETTINGS = {"binary_recipe", "long_finetune"}
STUDY8_VARIANTS = {"xnor_15", "abc_1_1_15"}
STUDY10_VARIANTS = {f"{q}_seed{s}" for q in ("xnor", "abc_1_1") for s in (1, 2)}
LATER_VARIANTS = STUDY8_VARIANTS | STUDY10_VARIANTS  # not in the recipe study's own sweep
STUDY2_FILES = sorted(p.stem for p in STUDY2.glob("*.yaml"))
STUDY2_VARIANTS = sorted(
    f"recipe_study/{stem}" for stem in STUDY2_FILES if stem not in STUDY2_SETTINGS | LATER_VARIANTS
)
# the recipe study's variants: the first study's set, with a third fp seed and three seeds
# of abc(3,3) and abc(5,5); binary runs start from (and distil from) the fp run of their seed
STUDY2_EXPECTED = {
    f"recipe_study/{name}": (quant, m, n, seed, None if src is None else f"recipe_study/{src}")
    for name, (quant, m, n, seed, src) in {
        **EXPECTED,
        "fp_seed2": ("fp", None, None, 2, None),
        "abc_5_5_seed1": ("abc", 5, 5, 1, "fp_seed1"),
        "abc_3_3_seed2": ("abc", 3, 3, 2, "fp_seed2"),
        "abc_5_5_seed2": ("abc", 5, 5, 2, "fp_seed2"),
    }.items()
}


def test_the_recipe_study_variant_files_are_the_expected_set():
    assert STUDY2_VARIANTS == sorted(STUDY2_EXPECTED)
    later = {f"recipe_study/{stem}" for stem in LATER_VARIANTS}
    assert (
        set(STUDY2_FILES)
        == {v.removeprefix("recipe_study/") for v in {*STUDY2_EXPECTED, *later}} | STUDY2_SETTINGS
    )


@pytest.mark.parametrize("name", STUDY2_VARIANTS)
def test_each_recipe_study_variant_composes_into_its_run(compose_cfg, name):
    cfg, raw, source = _composed(compose_cfg, "fmnist_recipe_study", name, STUDY2_EXPECTED)
    assert cfg.trainer.precision == "32-true" and cfg.data.augment
    # bnn with its sign weights divided by sqrt(fan_in) (the recipe search's bnn runs say why)
    assert cfg.quant.bnn_scale == ("fan_in" if cfg.quant.name == "bnn" else "none")
    if source is None:  # fp from scratch, the longer schedule, no teacher
        assert raw["init_from"] is None and raw["module"]["distill"]["teacher"] is None
        assert (cfg.trainer.max_epochs, cfg.optim.lr, cfg.recipe.name) == (15, 0.1, None)
        return
    start = f"${{sweep_run:{source},${{hydra:runtime.output_dir}}}}"
    assert raw["init_from"] == start and raw["module"]["distill"]["teacher"] == start
    # every binary run has the same recipe (recipe_study/binary_recipe)
    recipe = {k: v for k, v in raw.items() if k in ("recipe", "optim", "trainer", "schedule")}
    module = {k: v for k, v in raw["module"].items() if k != "distill"}
    distill = {k: v for k, v in raw["module"]["distill"].items() if k != "teacher"}
    first, _ = compose_cfg(
        "experiment=fmnist_recipe_study", "variant=recipe_study/abc_3_3", shrink=False
    )
    first_raw = OmegaConf.to_container(first, resolve=False)
    assert recipe == {k: first_raw[k] for k in recipe}
    assert module == {k: v for k, v in first_raw["module"].items() if k != "distill"}
    assert distill == {k: v for k, v in first_raw["module"]["distill"].items() if k != "teacher"}
    assert cfg.recipe.name is not None and (distill["weight"] or distill["feature_weight"])


def test_recipe_study_sweep_lists_every_variant_after_the_run_it_starts_from():
    _check_sweep_order(
        "fmnist_recipe_study.yaml", "fmnist_recipe_study", STUDY2_VARIANTS, STUDY2_EXPECTED
    )


def test_second_recipe_study_reruns_every_binary_variant_with_the_faster_binary_weights(
    compose_cfg,
):
    spec = load_spec(REPO / "sweeps" / "fmnist_recipe_study_2.yaml")
    values = spec.raw["parameters"]["variant"]["values"]
    binary = sorted(name for name, expected in STUDY2_EXPECTED.items() if expected[4] is not None)
    assert sorted(values) == binary and spec.grid_size() == len(binary) == 13
    # its starts are the recipe study's fp runs (copied in by `make recipe-study-2`)
    assert not any(STUDY2_EXPECTED[name][4] in values for name in values)
    fixed = {k: v["value"] for k, v in spec.raw["parameters"].items() if "value" in v}
    cfg, _ = compose_cfg(*spec.run_overrides({**fixed, "variant": values[0]}), shrink=False)
    first, _ = compose_cfg(
        "experiment=fmnist_recipe_study", "variant=recipe_study/abc_3_3", shrink=False
    )
    group, before = cfg.module.param_groups.binary, first.module.param_groups.binary
    assert (group.optimizer, group.weight_decay) == (before.optimizer, before.weight_decay)
    assert group.lr > before.lr  # the one change to the recipe
    rest = lambda c: {k: v for k, v in c.module.items() if k != "param_groups"}  # noqa: E731
    assert rest(cfg) == rest(first) and cfg.trainer.max_epochs == first.trainer.max_epochs


def test_third_recipe_study_adds_activation_calibration_to_the_second(compose_cfg):
    second = load_spec(REPO / "sweeps" / "fmnist_recipe_study_2.yaml")
    third = load_spec(REPO / "sweeps" / "fmnist_recipe_study_3.yaml")
    values = third.raw["parameters"]["variant"]["values"]
    # the second study's variants less xnor and bnn, whose finished runs it copies (`make
    # recipe-study-3`): calibration reads only ABC activation quantizers
    copied = ["recipe_study/xnor", "recipe_study/bnn"]
    before = second.raw["parameters"]["variant"]["values"]
    assert sorted(values) == sorted(v for v in before if v not in copied)
    assert third.grid_size() == 11
    assert fixed(third) == {**fixed(second), "quant.act_calibration": "shifts"}  # the one change
    keys = {}
    for spec in (second, third):
        for name in ["recipe_study/abc_3_3", *copied, "recipe_study/bwn"]:
            start = ["init_from=/fp/best.ckpt", "module.distill.teacher=/fp/best.ckpt"]
            cfg, _ = compose_cfg(*spec.run_overrides({**fixed(spec), "variant": name}), *start)
            keys[spec.name, name] = record_key(cfg, quant_config(cfg))
    for name in [*copied, "recipe_study/bwn"]:  # the same runs in both studies
        assert keys[second.name, name] == keys[third.name, name]
    abc = "recipe_study/abc_3_3"
    assert keys[third.name, abc]["quant.act_calibration"] == "shifts"
    assert keys[second.name, abc]["quant.act_calibration"] is None


def _one_change(compose_cfg, base_file: str, sweep_file: str, change: dict, keyed_as=None):
    """The configs of each variant of ``sweep_file``, composed as there and as in the sweep
    ``base_file``, after checking that the sweep's fixed parameters are the base's plus
    ``change``, that it sweeps its variants and nothing else, and that each variant's run
    keys in the two sweeps differ in the fields ``keyed_as`` alone (default: those of
    ``change``)."""
    base = load_spec(REPO / "sweeps" / base_file)
    later = load_spec(REPO / "sweeps" / sweep_file)
    assert fixed(later) == {**fixed(base), **change}  # the one change
    variants = later.raw["parameters"]["variant"]["values"]
    assert later.grid_size() == len(variants)  # one training per variant, nothing else swept
    start = ["init_from=/fp/best.ckpt", "module.distill.teacher=/fp/best.ckpt"]
    configs = {}
    for name in variants:
        cfg, before = (
            compose_cfg(
                *spec.run_overrides({**fixed(spec), "variant": name}), *start, shrink=False
            )[0]
            for spec in (later, base)
        )
        key, key_before = (record_key(c, quant_config(c)) for c in (cfg, before))
        assert {k for k in key if key[k] != key_before.get(k)} == set(keyed_as or change)
        configs[name] = (cfg, before)
    return configs


def _longer_than_the_third_study(compose_cfg, sweep_file: str, epochs: int = 6):
    """The configs of each variant of ``sweep_file``, a sweep that is the third recipe study
    with ``trainer.max_epochs=epochs`` and nothing else changed."""
    pairs = _one_change(
        compose_cfg, "fmnist_recipe_study_3.yaml", sweep_file, {"trainer.max_epochs": epochs}
    )
    for cfg, before in pairs.values():
        assert (cfg.trainer.max_epochs, before.trainer.max_epochs) == (epochs, 2)
    return {name: cfg for name, (cfg, _) in pairs.items()}


def test_fourth_recipe_study_fine_tunes_the_single_activation_base_networks_longer(compose_cfg):
    configs = _longer_than_the_third_study(compose_cfg, "fmnist_recipe_study_4.yaml")
    single = [
        "recipe_study/xnor",
        "recipe_study/abc_1_1",
        "recipe_study/bnn",
        "recipe_study/abc_3_1",
    ]
    assert list(configs) == single
    for cfg in configs.values():
        assert cfg.quant.name in ("xnor", "bnn") or cfg.quant.N == 1  # one activation base


def test_fifth_recipe_study_fine_tunes_the_three_and_five_base_networks_longer(compose_cfg):
    configs = _longer_than_the_third_study(compose_cfg, "fmnist_recipe_study_5.yaml")
    seeds = [f"recipe_study/abc_{mn}{s}" for s in ("", "_seed1", "_seed2") for mn in ("3_3", "5_5")]
    assert list(configs) == seeds  # seed 0 first
    for cfg in configs.values():
        assert (cfg.quant.M, cfg.quant.N) in ((3, 3), (5, 5))
    assert sorted(cfg.seed for cfg in configs.values()) == [0, 0, 1, 1, 2, 2]


def test_sixth_recipe_study_fine_tunes_xnor_and_abc_1_1_as_long_as_fp_trained(compose_cfg):
    configs = _longer_than_the_third_study(compose_cfg, "fmnist_recipe_study_6.yaml", epochs=15)
    assert list(configs) == ["recipe_study/xnor", "recipe_study/abc_1_1"]
    fp, _ = compose_cfg("experiment=fmnist_recipe_study", "variant=recipe_study/fp", shrink=False)
    for cfg in configs.values():
        assert cfg.trainer.max_epochs == fp.trainer.max_epochs  # as long as the start trained
        assert cfg.seed == 0


def test_seventh_recipe_study_is_the_sixth_without_distillation(compose_cfg):
    pairs = _one_change(
        compose_cfg,
        "fmnist_recipe_study_6.yaml",
        "fmnist_recipe_study_7.yaml",
        {"module.distill.weight": 0.0},
        keyed_as={"module.distill.teacher"},  # distillation that is off keys as no teacher
    )
    assert list(pairs) == ["recipe_study/xnor", "recipe_study/abc_1_1"]
    for cfg, before in pairs.values():
        assert (cfg.module.distill.weight, before.module.distill.weight) == (0.0, 0.5)
        assert active_teacher(cfg) is None  # the teacher is checked, never run
        assert active_teacher(before) == "/fp/best.ckpt"


def test_ninth_recipe_study_is_the_seventh_without_training_augmentation(compose_cfg):
    pairs = _one_change(
        compose_cfg, "fmnist_recipe_study_7.yaml", "fmnist_recipe_study_9.yaml",
        {"data.augment": False},
    )  # fmt: skip
    assert list(pairs) == ["recipe_study/xnor", "recipe_study/abc_1_1"]
    fp, _ = compose_cfg("experiment=fmnist_recipe_study", "variant=recipe_study/fp", shrink=False)
    assert fp.data.augment  # the start and the baselines trained with augmentation
    for cfg, before in pairs.values():
        assert (cfg.data.augment, before.data.augment) == (False, True)
        assert cfg.trainer.max_epochs == 15 and active_teacher(cfg) is None


def test_tenth_recipe_study_is_the_ninth_for_seeds_one_and_two(compose_cfg):
    """Each run is the ninth study's run of its quantizer but for the seed and the fp run it
    starts from (that of its seed); seed 1 of both first."""
    ninth = load_spec(REPO / "sweeps" / "fmnist_recipe_study_9.yaml")
    tenth = load_spec(REPO / "sweeps" / "fmnist_recipe_study_10.yaml")
    assert fixed(tenth) == fixed(ninth)
    variants = tenth.raw["parameters"]["variant"]["values"]
    assert tenth.grid_size() == len(variants) == 4
    assert variants == [f"recipe_study/{q}_seed{s}" for s in (1, 2) for q in ("xnor", "abc_1_1")]
    assert {v.removeprefix("recipe_study/") for v in variants} == STUDY10_VARIANTS
    start = ["init_from=/fp/best.ckpt", "module.distill.teacher=/fp/best.ckpt"]
    for name in variants:
        seed = int(name[-1])
        cfg, _ = compose_cfg(*tenth.run_overrides({**fixed(tenth), "variant": name}), *start,
                             shrink=False)  # fmt: skip
        before, _ = compose_cfg(
            *ninth.run_overrides({**fixed(ninth), "variant": name.rsplit("_seed", 1)[0]}),
            *start,
            shrink=False,
        )
        key, key_before = (record_key(c, quant_config(c)) for c in (cfg, before))
        assert {k for k in key if key[k] != key_before.get(k)} == {"seed", "data.seed"}, name
        assert (cfg.seed, before.seed, cfg.data.augment) == (seed, 0, False)
        raw, _ = compose_cfg(*tenth.run_overrides({**fixed(tenth), "variant": name}),
                             shrink=False)  # fmt: skip
        own_fp = f"${{sweep_run:recipe_study/fp_seed{seed},${{hydra:runtime.output_dir}}}}"
        raw = OmegaConf.to_container(raw, resolve=False)
        assert raw["init_from"] == own_fp and raw["module"]["distill"]["teacher"] == own_fp


def _as_run(cfg, run_dir: Path):
    """Point Hydra's runtime output dir (what ${hydra:...} reads) at ``run_dir``."""
    with read_write(cfg.hydra), open_dict(cfg.hydra):
        cfg.hydra.runtime.output_dir = str(run_dir)
    HydraConfig.instance().set_config(cfg)
    return cfg, run_dir


def test_binary_variant_starts_from_the_finished_fp_run_beside_it(compose_cfg, tmp_path):
    sweep_runs = tmp_path / "runs"
    cfg, _ = compose_cfg("experiment=fmnist_study", "variant=abc_1_1", "test=false")
    cfg, early = _as_run(cfg, sweep_runs / "run-000")
    with pytest.raises(UserError, match="no finished run of variant=fp beside this run"):
        train(cfg, early)

    cfg, _ = compose_cfg("experiment=fmnist_study", "variant=fp", "test=false")
    fp_record = train(*_as_run(cfg, sweep_runs / "run-001"))
    assert fp_record["status"] == "finished" and fp_record["config"]["variant"] == "fp"
    assert fp_record["key"]["trainer.precision"] == "bf16-mixed"

    cfg, _ = compose_cfg("experiment=fmnist_study", "variant=abc_1_1", "test=false")
    record = train(*_as_run(cfg, sweep_runs / "run-002"))
    best = fp_record["checkpoints"]["best"]
    assert record["status"] == "finished"
    assert record["key"]["init_from"] == str(Path(best).resolve())
    assert record["config"]["init_from"] == best  # the rerunnable config names the file

    # the second seed's binary run looks for fp_seed1, not fp
    cfg, _ = compose_cfg("experiment=fmnist_study", "variant=abc_3_3_seed1", "test=false")
    with pytest.raises(UserError, match="variant=fp_seed1"):
        train(*_as_run(cfg, sweep_runs / "run-003"))


def _record(run_dir: Path, status: str, best: str | None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    record = {
        "schema": "abc-lab/run-record", "version": 2, "status": status,
        "key": {"model.name": "resnet20", "data.name": "fashion_mnist", "quant.name": "fp",
                "seed": 0},
        "quant": {"name": "fp", "label": "fp", "family": "fp", "weight_bases": 0,
                  "activation_bases": 0, "fields": []},
        "checkpoints": {"best": best, "last": None},
    }  # fmt: skip
    (run_dir / "results.json").write_text(json.dumps(record))
    return run_dir


def test_init_from_a_run_directory_reads_its_record(tmp_path):
    assert run_checkpoint("/some/file.ckpt", "init_from") == "/some/file.ckpt"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(UserError, match="without a usable results.json"):
        run_checkpoint(empty, "init_from")
    running = _record(tmp_path / "running", "running", None)
    with pytest.raises(UserError, match="'running', not finished"):
        run_checkpoint(running, "init_from")
    # a moved run: the recorded path is stale, the file sits under <dir>/checkpoints/
    moved = _record(tmp_path / "moved", "finished", "/gone/checkpoints/best-epoch003.ckpt")
    (moved / "checkpoints").mkdir()
    (moved / "checkpoints" / "best-epoch003.ckpt").write_bytes(b"x")
    assert run_checkpoint(moved, "init_from") == str(moved / "checkpoints" / "best-epoch003.ckpt")
    lost = _record(tmp_path / "lost", "finished", "/gone/best.ckpt")
    with pytest.raises(UserError, match="checkpoints are gone"):
        run_checkpoint(lost, "init_from")


def test_eighth_recipe_study_is_the_seventh_on_resnet20_with_bireal_shortcuts(compose_cfg):
    """Its own fp runs (seed 0 first: the start), then the seventh study's xnor and abc(1,1),
    all as in the recipe studies but for the model."""
    seventh = load_spec(REPO / "sweeps" / "fmnist_recipe_study_7.yaml")
    eighth = load_spec(REPO / "sweeps" / "fmnist_recipe_study_8.yaml")
    assert fixed(eighth) == {"experiment": "fmnist_recipe_study", "model": "resnet20_bireal"}
    variants = eighth.raw["parameters"]["variant"]["values"]
    assert eighth.grid_size() == len(variants) == 5
    assert variants[0] == "recipe_study/fp"
    start = ["init_from=/fp/best.ckpt", "module.distill.teacher=/fp/best.ckpt"]
    was = {
        "recipe_study/xnor_15": (seventh, "recipe_study/xnor"),
        "recipe_study/abc_1_1_15": (seventh, "recipe_study/abc_1_1"),
    }
    assert {v.removeprefix("recipe_study/") for v in was} == STUDY8_VARIANTS
    for name in variants:
        spec, before_name = was.get(name, (None, name))
        cfg, _ = compose_cfg(
            *eighth.run_overrides({**fixed(eighth), "variant": name}),
            *(start if spec else []),
            shrink=False,
        )
        before_overrides = (
            spec.run_overrides({**fixed(spec), "variant": before_name})
            if spec
            else ["experiment=fmnist_recipe_study", f"variant={before_name}"]
        )
        before, _ = compose_cfg(*before_overrides, *(start if spec else []), shrink=False)
        key, key_before = (record_key(c, quant_config(c)) for c in (cfg, before))
        assert {k for k in key if key[k] != key_before.get(k)} == {"model.name"}, name
        assert set(key_before) <= set(key)
        assert (key["model.name"], key_before["model.name"]) == ("resnet20_bireal", "resnet20")
    assert [v for v in variants if v not in was] == [
        "recipe_study/fp", "recipe_study/fp_seed1", "recipe_study/fp_seed2"
    ]  # fmt: skip
