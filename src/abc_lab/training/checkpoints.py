"""Safe checkpoint loading with errors that say what is wrong and how to fix it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError
from ..quant import QuantConfig, quantize_model
from ..runs import RECORD_NAME, Problem, load_record

HOW = "pass the path of a .ckpt written by abc-lab train (e.g. <run dir>/checkpoints/last.ckpt)"


def run_dir_of(checkpoint: str | Path) -> Path:
    """The run directory a checkpoint belongs to (``<run>/checkpoints/x.ckpt`` -> ``<run>``);
    a directory is its own run directory."""
    path = Path(checkpoint).resolve()
    if path.is_dir():
        return path
    parent = path.parent
    return parent.parent if parent.name == "checkpoints" else parent


def run_checkpoint(path: str | Path, what: str) -> str:
    """``path`` itself when it is a file; for a run directory, that run's best checkpoint.

    A run directory is read through its record (``results.json``): the run must have
    finished, and its best checkpoint (by validation top-1; else its last) must still exist,
    at the recorded path or under the directory's ``checkpoints/`` if the run was moved.
    """
    p = Path(path)
    if not p.is_dir():
        return str(path)
    loaded = load_record(p / RECORD_NAME)
    if isinstance(loaded, Problem):
        raise UserError(
            f"{what} '{path}' is a directory without a usable {RECORD_NAME} ({loaded.reason}); "
            f"{HOW}, or the directory of a run of abc-lab train"
        )
    if loaded.status != "finished":
        raise UserError(
            f"{what} '{path}': that run is {loaded.status!r}, not finished; "
            "let it finish (or resume it) first, or pass one of its .ckpt files"
        )
    recorded = loaded.record.get("checkpoints") or {}
    for kind in ("best", "last"):
        if recorded.get(kind):
            for candidate in (Path(recorded[kind]), p / "checkpoints" / Path(recorded[kind]).name):
                if candidate.is_file():
                    return str(candidate)
    gone = recorded or "none recorded"
    raise UserError(f"{what} '{path}': the run's checkpoints are gone ({gone})")


def read_checkpoint(path: str | Path, what: str) -> dict:
    """Load a Lightning checkpoint with ``weights_only=True`` (no code runs from the file)."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{what} '{path}' does not exist; {HOW}")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0][:120] if str(err).strip() else type(err).__name__
        raise UserError(f"{what} '{path}' is not a readable checkpoint ({reason}); {HOW}") from err
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise UserError(f"{what} '{path}' holds no state_dict; {HOW}")
    return ckpt


def model_state(ckpt: dict) -> dict[str, torch.Tensor]:
    """The model's weights inside a checkpoint of ClassifierModule (keys under ``model.``)."""
    return {k[len("model.") :]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}


def check_compatible(
    model: nn.Module, state: dict[str, torch.Tensor], what: str, path: str | Path,
    ignore_missing_quantizers: bool = False,
) -> None:  # fmt: skip
    """Raise UserError unless ``state`` fits ``model`` key for key and shape for shape."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    if ignore_missing_quantizers:
        missing = [k for k in missing if "quantizer." not in k]
    unexpected = [k for k in state if k not in expected]
    if ignore_missing_quantizers:
        unexpected = [k for k in unexpected if "quantizer." not in k]
    shapes = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    problem = None
    if missing:
        problem = f"it lacks {len(missing)} weights such as '{missing[0]}'"
    elif unexpected:
        problem = f"it has {len(unexpected)} unknown weights such as '{unexpected[0]}'"
    elif shapes:
        k = shapes[0]
        problem = (
            f"'{k}' has shape {tuple(state[k].shape)}, the model needs {tuple(expected[k].shape)}"
        )
    if problem:
        raise UserError(
            f"{what} '{path}' comes from an incompatible architecture ({problem}); "
            "use a checkpoint of the same model, data and quantizer"
        )


def load_into(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load the weights ``state`` has for ``model`` (quantizer parameters may be absent)."""
    model.load_state_dict({k: v for k, v in state.items() if k in model.state_dict()}, strict=False)


def quantize_from(
    model: nn.Module,
    state: dict[str, torch.Tensor] | None,
    quant: QuantConfig,
    what: str,
    path: str | Path,
) -> nn.Module:
    """Load ``state`` into the float ``model``, then quantize it with ``quant``.

    The float weights are loaded before quantization (so quantizers initialise from them).
    Quantizer parameters in ``state`` (a binary run's checkpoint) are loaded after it where
    this run's quantizer has the same parameter: a checkpoint of another quantizer carries
    over what the two share and the rest starts fresh (stage 2 of two-stage training keeps
    stage 1's activation shifts v and scales β; its weight quantizer is new). A shared
    parameter of another shape (another N) is an error.
    """
    if state is not None:
        float_part = {k: v for k, v in state.items() if "quantizer." not in k}
        check_compatible(model, float_part, what, path)
        load_into(model, float_part)
    model = quantize_model(model, quant)
    quant_part = {k: v for k, v in (state or {}).items() if "quantizer." in k}
    if quant_part:
        expected = model.state_dict()
        for k, v in quant_part.items():
            if k in expected and v.shape != expected[k].shape:
                raise UserError(
                    f"{what} '{path}' holds quantizer parameter '{k}' of shape "
                    f"{tuple(v.shape)}, this run's quantizer needs {tuple(expected[k].shape)}; "
                    "use the base counts (quant.N, quant.M) of the run it comes from"
                )
        load_into(model, quant_part)
    return model


CONFIG = "config.yaml"


def trained_model(
    path: str | Path, what: str, check: Callable[[dict], None] | None = None
) -> tuple[nn.Module, dict, str]:
    """A finished run's trained network as it was trained (its model and quantizer from the
    run's own config, its weights from ``path``: a run directory's best checkpoint, or a
    .ckpt inside a run directory); returns it with the run's resolved config and the
    checkpoint used. Anything missing or not fitting is a UserError naming ``what``;
    ``check`` sees the run's config before anything is built, and may raise its own."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    checkpoint = run_checkpoint(path, what)
    ckpt = read_checkpoint(checkpoint, what)
    config_file = run_dir_of(checkpoint) / CONFIG
    if not config_file.is_file():
        raise UserError(
            f"{what} '{path}' is not in a run directory with {CONFIG} (the run's model "
            "and quantizer are read from it); pass a run directory of abc-lab train or a "
            ".ckpt inside one"
        )
    try:
        cfg = OmegaConf.to_container(OmegaConf.load(config_file), resolve=True)
    except Exception as err:
        raise UserError(f"{what} '{path}': {config_file} is not readable ({err})") from err
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        raise UserError(f"{what} '{path}': {config_file} has no model section")
    if check is not None:
        check(cfg)
    try:
        model = instantiate(cfg["model"])
        quant = QuantConfig(
            **{k: v for k, v in (cfg.get("quant") or {}).items() if not k.startswith("_")}
        )
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"{what} '{path}': its model or quantizer cannot be built ({reason})"
        ) from err
    model = quantize_model(model, quant)
    state = model_state(ckpt)
    check_compatible(model, state, what, path)
    model.load_state_dict(state)
    return model, cfg, str(Path(checkpoint).resolve())
