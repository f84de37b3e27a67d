"""Export a trained model (a run directory, a checkpoint or a module) to a packed model file.

Every quantized layer's weight bases are packed to bits next to their scales α; activation
parameters (v, β), BatchNorm and the float layers (stem, classifier, shortcuts) are kept as
float tensors. The file's tensor bytes equal the model summary's packed-weight figure plus
the BatchNorm running statistics (which the summary, counting parameters, leaves out).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..models import BUILD_KEYS, build_model
from ..quant import QuantConfig, QuantConv2d, QuantLinear, quantize_model, summarize
from ..quant.quantizers import ABCInput, ABCWeight, ScaledSignWeight, SignInput, SignWeight
from ..runs import RECORD_NAME, Problem, load_record, read_run
from .format import FormatError, payload_bytes, save_packed
from .packing import pack_bits

RECORD = RECORD_NAME
CONFIG = "config.yaml"


class ExportError(ValueError):
    """A source that cannot be exported; the message names it and the fix."""


def _weight_kind(q: object) -> str:
    for cls, kind in ((SignWeight, "sign"), (ScaledSignWeight, "bwn"), (ABCWeight, "abc")):
        if type(q) is cls:
            return kind
    raise ExportError(f"weight quantizer {type(q).__name__} has no packed form")


def _input_kind(q: object) -> str | None:
    if q is None:
        return None
    for cls, kind in ((SignInput, "sign"), (ABCInput, "abc")):
        if type(q) is cls:
            return kind
    raise ExportError(f"input quantizer {type(q).__name__} has no packed form")


def _layer_entry(name: str, layer: nn.Module, tensors: dict[str, Tensor]) -> dict[str, Any]:
    """Pack one quantized layer into ``tensors``; return its metadata entry."""
    kq, iq = layer.kernel_quantizer, layer.input_quantizer
    if kq is None:  # float weights, binary inputs: keep the float weight
        raise ExportError(f"layer {name!r} binarises inputs but not weights; not supported")
    wkind, ikind = _weight_kind(kq), _input_kind(iq)
    with torch.no_grad():
        B, alpha = kq.decompose(layer.weight.detach().float())
    tensors[f"{name}.weight_bits"] = pack_bits(B < 0)
    if wkind != "sign" or not bool((alpha == 1).all()):  # plain sign weights: α = 1, not stored
        tensors[f"{name}.alpha"] = alpha.detach().float().contiguous()
    for pname, p in layer.named_parameters():
        if pname != "weight":
            tensors[f"{name}.{pname}"] = p.detach().float().contiguous()
    entry: dict[str, Any] = {
        "type": "conv2d" if isinstance(layer, nn.Conv2d) else "linear",
        "shape": list(layer.weight.shape),
        "M": int(B.shape[0]),
        "N": 0 if iq is None else int(getattr(iq, "N", 1)),
        "weight": wkind,
        "input": ikind,
        "alpha_shape": list(alpha.shape),
        "bias": layer.bias is not None,
    }
    if isinstance(layer, nn.Conv2d):
        entry.update(
            stride=list(layer.stride), padding=list(layer.padding),
            dilation=list(layer.dilation), groups=layer.groups,
            padding_mode=layer.padding_mode,
        )  # fmt: skip
    return entry


def pack_model(
    model: nn.Module,
    model_spec: dict[str, Any],
    quant: QuantConfig,
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """Tensors and metadata of the packed form of ``model`` (built by
    ``build_model(**model_spec)`` and quantized with ``quant``), without writing a file."""
    identity = quant.identity()
    if identity["weight_bases"] == 0 and identity["activation_bases"] > 0:
        raise ExportError(
            f"{quant.label()} binarises activations but keeps float weights (stage 1 of "
            "two-stage training), which has no packed form; export the run trained from it "
            "with binary weights (abc-lab train recipe=two_stage_2 init_from=<this run>)"
        )
    spec = {k: model_spec[k] for k in BUILD_KEYS}
    input_shape = [spec["in_channels"], spec["input_size"], spec["input_size"]]
    model = model.float().eval()
    tensors: dict[str, Tensor] = {}
    layers: dict[str, dict[str, Any]] = {}
    packed_prefixes: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, QuantConv2d | QuantLinear):
            layers[name] = _layer_entry(name, module, tensors)
            packed_prefixes.append(name + ".")
    buffer_bytes = 0
    for key, value in model.state_dict().items():
        if any(key.startswith(p) for p in packed_prefixes) or key.endswith("num_batches_tracked"):
            continue
        tensors[key] = value.detach().float().contiguous()
        if key.endswith(("running_mean", "running_var")):
            buffer_bytes += value.numel() * 4
    summary = summarize(model, tuple(input_shape)).totals()
    meta = {
        "model": spec,
        "quant": asdict(quant),
        "label": quant.label(),
        "input_shape": input_shape,
        "layers": layers,
        "summary_packed_bytes": int(summary["memory_packed_bytes"]),
        "buffer_bytes": buffer_bytes,
        "source": source or {},
        **(extra or {}),
    }
    if payload_bytes(tensors) != meta["summary_packed_bytes"] + buffer_bytes:
        raise FormatError(  # a broken invariant, not a user error
            f"packed {payload_bytes(tensors)} bytes, the summary expects "
            f"{meta['summary_packed_bytes']} + {buffer_bytes} (BatchNorm statistics)"
        )
    return tensors, meta


def export_model(
    model: nn.Module,
    path: str | Path,
    model_spec: dict[str, Any],
    quant: QuantConfig,
    source: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write the packed form of ``model`` to ``path`` (see :func:`pack_model`)."""
    tensors, meta = pack_model(model, model_spec, quant, source, extra)
    return save_packed(path, tensors, meta)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _locate(source: str | Path) -> tuple[Path, Path, dict[str, Any] | None]:
    """(run directory, checkpoint, record or None) for a run directory or a .ckpt in one."""
    src = Path(source)
    if src.is_dir():
        run = src
        loaded = load_record(run / RECORD)
        if isinstance(loaded, Problem):
            raise ExportError(
                f"'{source}' is a directory without a usable {RECORD} ({loaded.reason}); pass "
                "the directory of a finished abc-lab train run or a .ckpt inside one"
            )
        record = dict(loaded.record)
        ckpts = record.get("checkpoints") or {}
        for kind in ("best", "last"):
            if ckpts.get(kind):
                for cand in (Path(ckpts[kind]), run / "checkpoints" / Path(ckpts[kind]).name):
                    if cand.is_file():
                        return run, cand, record
        raise ExportError(f"run '{source}' has no checkpoint left ({ckpts or 'none recorded'})")
    if not src.is_file():
        raise ExportError(f"'{source}' does not exist; pass a run directory or a .ckpt")
    run = src.parent.parent  # <run>/checkpoints/<name>.ckpt
    found = read_run(run)
    return run, src, None if found is None else dict(found.record)


def export_run(source: str | Path, out: str | Path | None = None) -> Path:
    """Export a run directory (its best checkpoint) or a .ckpt inside a run directory."""
    from omegaconf import OmegaConf

    run, ckpt_path, record = _locate(source)
    if not (run / CONFIG).is_file():
        raise ExportError(
            f"'{ckpt_path}' is not inside a run directory with {CONFIG}; the model and "
            "quantizer are read from there: pass a checkpoint written by abc-lab train"
        )
    cfg = OmegaConf.to_container(OmegaConf.load(run / CONFIG), resolve=False)
    try:
        spec = {k: cfg["model"][k] for k in BUILD_KEYS}
        qfields = {k: v for k, v in cfg["quant"].items() if not str(k).startswith("_")}
        quant = QuantConfig(**qfields)
    except (KeyError, TypeError, ValueError) as err:
        raise ExportError(f"{run / CONFIG} lacks a usable model or quant section ({err})") from err
    try:
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        state = {k[6:]: v for k, v in ckpt["state_dict"].items() if k.startswith("model.")}
    except Exception as err:
        line = (str(err).strip().splitlines() or [type(err).__name__])[0][:100]
        raise ExportError(f"checkpoint '{ckpt_path}' is not readable ({line})") from err
    model = quantize_model(build_model(**spec), quant)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("kernel_quantizer.shifts")]
    if missing or unexpected:
        bad = (missing or unexpected)[0]
        raise ExportError(
            f"checkpoint '{ckpt_path}' does not fit {spec['name']} with {quant.label()} "
            f"(e.g. '{bad}')"
        )
    test = ((record or {}).get("metrics") or {}).get("test") or {}
    source_info = {
        "run_dir": str(run.resolve()),
        "checkpoint": str(ckpt_path.resolve()),
        "checkpoint_sha256": _sha256(ckpt_path),
        "record_test_acc1": test.get("acc1"),
    }
    extra = {"data": cfg.get("data")}
    stem = quant.label().replace("(", "-").replace(",", "-").replace(")", "")  # abc(3,3): abc-3-3
    target = Path(out) if out else run / "export" / f"{spec['name']}-{stem}.safetensors"
    return export_model(model, target, spec, quant, source_info, extra)
