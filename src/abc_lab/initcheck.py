"""How good is a binary network at its full-precision initialisation?

``abc-lab init-check <fp run dir> --quant abc:3:3 abc:5:5 xnor --act-init 1/N lsq fit-beta``
quantizes the fp run's best weights with each configuration (what ``init_from`` hands a
binary run) and measures validation top-1 and cross-entropy twice: as loaded, and after
recalibrating the BatchNorm statistics on a few training batches (no weight changes). The
activation quantizers start as ``--act-init`` says: β = 1/N, β fitted to N(0, 1) (``lsq``),
or fitted to each layer's inputs on the same training batches (``fit-beta``, ``fit-shifts``:
``quant.act_calibration``, see ``quant/calibrate.py``). The
loss shows what top-1 hides: a quantizer whose outputs leave the fp network's scale starts
with a huge loss, and so with huge first gradients. The data, model and
split come from the run's own ``config.yaml``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from omegaconf import OmegaConf

from .errors import UserError
from .quant import QuantConfig, parse_quant_spec
from .quant.calibrate import calibrate_activations, first_inputs
from .quant.functional import set_kernel
from .training import checkpoints as ckpts

# How the activation quantizers start: (quant.beta_init, quant.act_calibration)
ACT_INITS = {
    "1/N": (None, None),
    "lsq": ("lsq", None),
    "fit-beta": (None, "beta"),
    "fit-shifts": (None, "shifts"),
    "fit-shifts-bn": (None, "shifts_bn"),  # the same function as fit-shifts, other STE windows
}


@dataclass
class InitResult:
    label: str
    act_init: str
    top1_loaded: float
    top1_recalibrated: float
    loss_loaded: float
    loss_recalibrated: float


def parse_quant(spec: str) -> QuantConfig:
    """``parse_quant_spec``, its errors as one-line UserErrors."""
    try:
        return parse_quant_spec(spec)
    except ValueError as err:
        raise UserError(f"--quant {spec!r}: {err}") from err


def _run_dir(path: Path) -> Path:
    path = Path(path)
    run = path.parent.parent if path.is_file() else path  # <run>/checkpoints/x.ckpt
    if not (run / "config.yaml").is_file():
        raise UserError(f"'{path}' is neither a run directory nor a checkpoint inside one")
    return run


@torch.no_grad()
def evaluate(model: torch.nn.Module, loader, images: int) -> tuple[float, float]:
    """Top-1 and mean cross-entropy over the first ``images`` samples of ``loader``."""
    model.eval()
    correct = seen = 0
    loss = 0.0
    for x, y in loader:
        x, y = x[: images - seen], y[: images - seen]
        logits = model(x).float()
        correct += int((logits.argmax(1) == y).sum())
        loss += float(torch.nn.functional.cross_entropy(logits, y, reduction="sum"))
        seen += len(y)
        if seen >= images:
            break
    return correct / max(seen, 1), loss / max(seen, 1)


@torch.no_grad()
def recalibrate_bn(model: torch.nn.Module, loader, batches: int) -> None:
    """Replace every BatchNorm's running statistics by their average over ``batches``."""
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    model.train()
    for i, (x, _) in enumerate(loader):
        if i >= batches:
            break
        model(x)


def init_check(
    source: Path,
    quants: list[str],
    act_inits: list[str],
    images: int = 5000,
    recal_batches: int = 20,
    progress=None,
) -> list[InitResult]:
    """Top-1 of each quantizer x activation initialisation at the fp weights of ``source``."""
    from hydra.utils import instantiate

    for b in act_inits:
        if b not in ACT_INITS:
            raise UserError(f"--act-init {b!r}: choose from {', '.join(ACT_INITS)}")
    run = _run_dir(source)
    ckpt = ckpts.run_checkpoint(source, "source") if Path(source).is_dir() else str(source)
    state = ckpts.model_state(ckpts.read_checkpoint(ckpt, "source"))
    # the fp weights only: every configuration starts from them with fresh quantizers
    float_state = {k: v for k, v in state.items() if "quantizer." not in k}
    cfg = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"), resolve=False)
    data_cfg = {k: v for k, v in cfg["data"].items() if k != "name"}
    datamodule = instantiate(data_cfg)
    datamodule.setup("fit")
    set_kernel("eager")
    configs = [parse_quant(q) for q in quants]
    results = []
    jobs = [
        (q, b) for q in configs for b in (act_inits if "beta_init" in q.used_fields() else ["—"])
    ]
    for i, (q, init) in enumerate(jobs):
        beta_init, calibration = ACT_INITS.get(init, (None, None))
        qc = replace(q, beta_init=beta_init, act_calibration=calibration)
        model = instantiate(cfg["model"])
        model = ckpts.quantize_from(model, float_state, qc, "source", ckpt)
        if calibration:
            calibrate_activations(
                model, first_inputs(datamodule.train_dataloader(), recal_batches), calibration
            )
        loaded = evaluate(model, datamodule.val_dataloader(), images)
        recal = copy.deepcopy(model)
        recalibrate_bn(recal, datamodule.train_dataloader(), recal_batches)
        recalibrated = evaluate(recal, datamodule.val_dataloader(), images)
        results.append(
            InitResult(qc.label(), init, loaded[0], recalibrated[0], loaded[1], recalibrated[1])
        )
        if progress:
            progress(i + 1, len(jobs))
    return results
