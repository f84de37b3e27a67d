"""Load and validate a W&B sweep definition (``sweeps/*.yaml``) before any run starts.

The file is W&B's own format, so ``wandb sweep`` + ``wandb agent`` run it unchanged; this
module adds the checks that make an offline sweep fail early with one sentence: unknown
method, malformed YAML, a parameter that is not a valid Hydra override of the train config
(checked by composing the real config), an unknown metric, a command that does not run
``abc-lab train ${args_no_hyphens}``.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..configs import config_dir as default_config_dir
from .metrics import EPOCH_METRICS, METRICS

ARGS_MACRO = "${args_no_hyphens}"
PROGRAM = "abc-lab"
SUGGESTED_COMMAND = "[${env}, abc-lab, train, ${args_no_hyphens}]"
# How many compositions of the train config the full-product check may cost (~0.1 s each).
MAX_PRODUCT_CHECKS = 12


class SpecError(ValueError):
    """A sweep file or its extra overrides cannot run; the message is one sentence."""


def override(name: str, value: Any) -> str:
    """The Hydra override a W&B agent passes for one parameter (``${args_no_hyphens}``)."""
    return f"{name}={value}"  # exactly wandb's f"{param}={value}", so both modes agree


def override_key(item: str) -> str:
    """The config key of a Hydra override: ``+optim.lr=0.1`` -> ``optim.lr``."""
    key = item.split("=", 1)[0].strip()
    return key.lstrip("+~")


def compose_train(overrides: Sequence[str], config_dir: Path | None = None) -> Any:
    """The train config composed with ``overrides`` (unresolved), as `abc-lab train` would."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    cdir = str(config_dir or default_config_dir())
    try:
        with initialize_config_dir(version_base="1.3", config_dir=cdir, job_name="sweep"):
            return compose(config_name="train", overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


@dataclass
class SweepSpec:
    """A validated sweep definition plus the extra overrides given on the command line."""

    path: Path
    raw: dict[str, Any]
    extra: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.raw.get("name") or self.path.stem)

    @property
    def method(self) -> str:
        return str(self.raw["method"])

    @property
    def metric(self) -> dict[str, str] | None:
        metric = self.raw.get("metric")
        return dict(metric) if metric else None

    @property
    def parameters(self) -> dict[str, dict[str, Any]]:
        return self.raw["parameters"]

    @property
    def early_terminate(self) -> dict[str, Any] | None:
        return self.raw.get("early_terminate")

    @property
    def run_cap(self) -> int | None:
        return self.raw.get("run_cap")

    @property
    def fixed_overrides(self) -> list[str]:
        """Hydra overrides written in ``command`` itself, applied to every run."""
        return command_overrides(self.raw["command"], self.raw.get("program"))

    def run_overrides(self, params: Mapping[str, Any]) -> list[str]:
        """The full override list of one run: command's own, the run's parameters, extras."""
        return [*self.fixed_overrides, *(override(k, v) for k, v in params.items()), *self.extra]

    def grid_size(self) -> int | None:
        """Number of grid points (None unless the method is grid)."""
        if self.method != "grid":
            return None
        return math.prod(len(_grid_values(p)) for p in self.parameters.values())

    def engine_config(self) -> dict[str, Any]:
        """The definition as W&B's engine wants it (a plain dict, deep-copied)."""
        return copy.deepcopy(self.raw)

    def fingerprint(self) -> str:
        """Short hash of the definition and the extra overrides (names the sweep dir)."""
        blob = json.dumps({"spec": self.raw, "extra": self.extra}, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]


def _fail(path: Path | str, message: str) -> SpecError:
    return SpecError(f"{path}: {message}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if "Available options" in text:
        opts = [ln.strip() for ln in text.split("Available options", 1)[1].splitlines()[1:]]
        opts = list(itertools.takewhile(bool, opts))
        if opts:
            first += f" (available: {', '.join(opts)})"
    return first.rstrip(".")


def command_overrides(command: Sequence[Any], program: Any = None) -> list[str]:
    """Hydra overrides written into ``command`` (everything but env, program, train, macro)."""
    out = []
    for token in command:
        token = str(token)
        if token in ("${env}", "${program}", PROGRAM, "train", ARGS_MACRO, str(program)):
            continue
        out.append(token)
    return out


def _check_command(path: Path, raw: Mapping[str, Any]) -> None:
    command = raw.get("command")
    if command is None:
        raise _fail(
            path, f"no 'command'; W&B's default runs a Python script, use {SUGGESTED_COMMAND}"
        )
    if not isinstance(command, list) or not all(isinstance(t, str | int | float) for t in command):
        raise _fail(path, f"'command' must be a list of strings such as {SUGGESTED_COMMAND}")
    tokens = [str(t) for t in command]
    program = raw.get("program")
    runs_abc_lab = PROGRAM in tokens or ("${program}" in tokens and program == PROGRAM)
    if not runs_abc_lab or "train" not in tokens:
        raise _fail(path, f"'command' must run 'abc-lab train', e.g. {SUGGESTED_COMMAND}")
    if tokens.count(ARGS_MACRO) != 1:
        raise _fail(
            path,
            f"'command' must pass the parameters once as {ARGS_MACRO} "
            "(Hydra overrides take no leading hyphens)",
        )
    for token in command_overrides(tokens, program):
        if token.startswith("${"):
            raise _fail(
                path,
                f"'command' uses {token}; only ${{env}}, ${{program}} and "
                f"{ARGS_MACRO} are supported",
            )
        if token.startswith("-"):
            raise _fail(
                path,
                f"'command' holds {token!r}; only Hydra overrides (key=value) may follow 'train'",
            )


def _distribution(param: Mapping[str, Any]) -> str:
    """The distribution W&B uses for a parameter (inferred from min/max types when omitted)."""
    if "distribution" in param:
        return str(param["distribution"])
    if "value" in param:
        return "constant"
    if "values" in param:
        return "categorical"
    ends = [param.get("min"), param.get("max")]
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in ends)
    return "int_uniform" if ints else "uniform"


def _grid_values(param: Mapping[str, Any]) -> list[Any]:
    """Every value a grid search takes for a parameter (W&B's expansion)."""
    dist = _distribution(param)
    if dist == "int_uniform":
        return list(range(int(param["min"]), int(param["max"]) + 1))
    if dist == "q_uniform":
        lo, hi, q = param["min"], param["max"], param.get("q", 1.0)
        return [lo + i * q for i in range(int(math.floor((hi - lo) / q)))]
    return [param["value"]] if "value" in param else list(param.get("values", []))


def _candidates(param: Mapping[str, Any]) -> list[Any]:
    """Values to check a parameter with: its listed values, or the ends of its range."""
    if "value" in param or "values" in param:
        return _grid_values(param)
    ends = [param[k] for k in ("min", "max") if k in param]
    dist = _distribution(param)
    if dist.startswith(("log_uniform", "inv_log_uniform", "q_log_uniform")) and not dist.endswith(
        "_values"
    ):
        ends = [math.exp(v) for v in ends]  # W&B's log_uniform bounds are exponents
    if dist == "int_uniform":
        ends = [int(v) for v in ends]
    return ends or [param.get("mu", 0.0)]


def _check_parameters(path: Path, raw: Mapping[str, Any]) -> None:
    params = raw.get("parameters")
    if not isinstance(params, Mapping) or not params:
        raise _fail(path, "'parameters' must map at least one Hydra override key to its values")
    for name, param in params.items():
        where = f"parameter {name!r}"
        if not isinstance(name, str) or not name or "=" in name or " " in name:
            raise _fail(path, f"{where} is not a Hydra override key such as quant.M")
        if override_key(name).split(".")[0].split("/")[0] == "hydra":
            raise _fail(path, f"{where} sets Hydra itself; sweep only train-config keys")
        if not isinstance(param, Mapping):
            raise _fail(path, f"{where} must be a mapping such as {{values: [1, 2]}}")
        if "parameters" in param:
            raise _fail(
                path,
                f"{where} nests parameters; write each Hydra key as "
                "its own dotted parameter, e.g. quant.M",
            )
        for value in _candidates(param):
            if value is None:
                raise _fail(
                    path,
                    f"{where}: a W&B agent passes null as the string 'None'; "
                    "write 'null' (quoted) for Hydra's null",
                )
            if isinstance(value, Mapping):
                raise _fail(
                    path,
                    f"{where}: dict values cannot be passed as one Hydra "
                    "override; sweep the dotted keys instead",
                )
        if raw.get("method") == "grid":
            discrete = _distribution(param) in (
                "constant",
                "categorical",
                "int_uniform",
                "q_uniform",
            )
            if not discrete or "probabilities" in param:
                raise _fail(
                    path,
                    f"{where}: grid search needs listed values (or int_uniform / "
                    "q_uniform), not a continuous distribution",
                )


def _check_searchable(path: Path, raw: Mapping[str, Any]) -> None:
    if raw.get("method") == "bayes" and all("value" in p for p in raw["parameters"].values()):
        raise _fail(path, "bayes search needs at least one parameter with values or a range")


def _check_metric(path: Path, raw: Mapping[str, Any]) -> None:
    metric = raw.get("metric")
    method = raw.get("method")
    if metric is None:
        if method == "bayes" or raw.get("early_terminate"):
            need = "bayes search" if method == "bayes" else "early termination"
            raise _fail(
                path,
                f"{need} needs a 'metric' (name and goal), e.g. {{name: val/acc1, goal: maximize}}",
            )
        return
    if not isinstance(metric, Mapping) or "name" not in metric:
        raise _fail(path, "'metric' must be a mapping with 'name' and 'goal'")
    name = metric["name"]
    if name not in METRICS:
        raise _fail(path, f"unknown metric {name!r}; run records measure {', '.join(METRICS)}")
    goal = metric.get("goal")
    if goal is None:
        raise _fail(
            path,
            f"metric {name} has no 'goal'; W&B would minimize it, so write "
            "goal: maximize or goal: minimize",
        )
    if (goal == "maximize") == name.endswith("loss"):
        warnings.warn(f"{path}: metric {name} with goal {goal} looks inverted", stacklevel=3)


def _check_early_terminate(path: Path, raw: Mapping[str, Any]) -> None:
    et = raw.get("early_terminate")
    if et is None:
        return
    if raw["metric"]["name"] not in EPOCH_METRICS:
        raise _fail(
            path,
            f"hyperband judges runs by a metric logged every validation epoch, and "
            f"{raw['metric']['name']} is not one; use {', '.join(EPOCH_METRICS)}",
        )


def _check_schema(path: Path, raw: Mapping[str, Any]) -> None:
    """W&B's own JSON-schema check (keys, methods, distributions, goals, early stopping),
    when its sweep engine is installed; online, the W&B server makes the same check."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from sweeps import schema_violations_from_proposed_config
    except ImportError:
        return
    violations = schema_violations_from_proposed_config(dict(raw))
    if violations:
        raise _fail(path, f"not a valid W&B sweep ({violations[0].splitlines()[0]})")


def _compose_check(
    path: Path, spec: SweepSpec, config_dir: Path, config_name: str = "train"
) -> None:
    """Compose the train config with the overrides of the sweep to reject bad keys/values."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    if GlobalHydra.instance().is_initialized():
        GlobalHydra.instance().clear()
    base = [*spec.fixed_overrides, *spec.extra]
    params = spec.parameters
    with initialize_config_dir(version_base="1.3", config_dir=str(config_dir), job_name="sweep"):

        def attempt(items: list[str]) -> Exception | None:
            try:
                compose(config_name=config_name, overrides=items)
            except Exception as exc:
                return exc
            return None

        if exc := attempt(list(spec.fixed_overrides)):
            raise _fail(path, f"'command' holds an invalid override ({_first_line(exc)})")
        if exc := attempt(base):
            raise SpecError(
                f"extra overrides {' '.join(spec.extra)} are not valid for the "
                f"train config ({_first_line(exc)})"
            )
        for name, param in params.items():
            for value in _candidates(param):
                if exc := attempt([*base, override(name, value)]):
                    raise _fail(
                        path,
                        f"parameter {name!r} value {value!r} is not a valid "
                        f"override of the train config ({_first_line(exc)})",
                    )
        combos = list(
            itertools.islice(
                itertools.product(*(_candidates(p) for p in params.values())),
                MAX_PRODUCT_CHECKS + 1,
            )
        )
        if len(combos) <= MAX_PRODUCT_CHECKS:
            for combo in combos:
                items = [override(n, v) for n, v in zip(params, combo, strict=True)]
                if exc := attempt([*base, *items]):
                    raise _fail(
                        path,
                        f"parameters {' '.join(items)} together are not a valid "
                        f"train config ({_first_line(exc)})",
                    )
    GlobalHydra.instance().clear()


def check_extra(extra: Iterable[str], spec_params: Iterable[str]) -> list[str]:
    """Extra overrides must be plain Hydra overrides that do not fight the sweep itself."""
    extra = [str(e) for e in extra]
    params = {override_key(p) for p in spec_params}
    for item in extra:
        if item.startswith("-"):
            raise SpecError(
                f"unknown option {item!r}: extra arguments are Hydra overrides "
                "(key=value) applied to every run"
            )
        if "=" not in item:
            raise SpecError(f"extra argument {item!r} is not a Hydra override (key=value)")
        key = override_key(item)
        if key in params:
            raise SpecError(
                f"{key} is a parameter of the sweep; remove {item!r} from the extra "
                "overrides or from the sweep file"
            )
        if key == "hydra.run.dir" or key.startswith(("hydra.sweep", "hydra/launcher")):
            raise SpecError(
                f"{item!r}: the sweep runner chooses each run's directory itself; use --sweep-dir"
            )
    return extra


def load_spec(
    path: Path | str,
    extra: Iterable[str] = (),
    config_dir: Path | None = None,
    compose_check: bool = True,
) -> SweepSpec:
    """Read, validate and return the sweep at ``path``; raises :class:`SpecError` (one
    sentence naming the file and the problem) for anything that could not run."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such sweep file (definitions live in sweeps/)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read it ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "unparsable"
        raise _fail(path, f"malformed YAML{where} ({problem})") from None
    if not isinstance(raw, dict):
        raise _fail(path, "a sweep file must be a YAML mapping with method, parameters, command")
    _check_schema(path, raw)  # W&B's own rules first; then what only abc-lab knows
    _check_command(path, raw)
    _check_parameters(path, raw)
    _check_searchable(path, raw)
    _check_metric(path, raw)
    _check_early_terminate(path, raw)
    spec = SweepSpec(path=path, raw=raw, extra=check_extra(extra, raw["parameters"]))
    if compose_check:
        _compose_check(path, spec, config_dir or default_config_dir())
    return spec
