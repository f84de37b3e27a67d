"""The optimizer of a run: parameter groups (binary, quant, float), each with its own settings.

``module.param_groups`` gives each group either null (the main optimizer, ``optim``) or its
own settings, e.g. ``{optimizer: adam, lr: 1.0e-4, weight_decay: 0.0}``. Groups that use
other optimizer classes than the main one get an optimizer each, held together by
:class:`GroupedOptimizer`: one ``torch.optim.Optimizer`` whose ``param_groups`` are its
children's, so Lightning's automatic optimization, the LR schedulers (which scale every
group) and checkpoints (``state_dict`` holds every child's) see one optimizer.

Independent of Lightning; :func:`resolve_group_settings` reads ``conf/optim`` for named
optimizers.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import UserError
from ..quant import QuantConv2d, QuantLinear

GROUPS = ("binary", "quant", "float")
OptimizerFactory = Callable[..., torch.optim.Optimizer]


class OptimizerSpec:
    """An optimizer class and its constructor settings (one group's optimizer)."""

    def __init__(self, cls: type[torch.optim.Optimizer], settings: Mapping[str, Any]) -> None:
        self.cls = cls
        self.settings = dict(settings)

    @classmethod
    def of(cls, factory: OptimizerFactory) -> OptimizerSpec:
        """The spec of a factory from the config (a partial of an optimizer class)."""
        if isinstance(factory, functools.partial) and isinstance(factory.func, type):
            return cls(factory.func, factory.keywords)
        probe = factory(params=[torch.zeros(1, requires_grad=True)])
        return cls(type(probe), probe.defaults)

    def defaults(self) -> dict[str, Any]:
        """Every setting the optimizer has, with these settings applied."""
        return dict(self.cls([torch.zeros(1, requires_grad=True)], **self.settings).defaults)

    def __repr__(self) -> str:
        return f"OptimizerSpec({self.cls.__name__}, {self.settings})"


def split_parameters(model: nn.Module) -> dict[str, list[tuple[str, nn.Parameter]]]:
    """The trainable parameters of ``model`` by group: ``binary`` (latent weights of layers
    whose weights are quantized), ``quant`` (the quantizers' own v, β, u) and ``float``."""
    binary = {
        id(m.weight)
        for m in model.modules()
        if isinstance(m, QuantConv2d | QuantLinear) and m.kernel_quantizer is not None
    }
    groups: dict[str, list[tuple[str, nn.Parameter]]] = {g: [] for g in GROUPS}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "quantizer." in name:
            groups["quant"].append((name, p))
        elif id(p) in binary:
            groups["binary"].append((name, p))
        else:
            groups["float"].append((name, p))
    return groups


class _ChainedState(MutableMapping):
    """The per-parameter state of several optimizers as one mapping (``optimizer.state``)."""

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        self.optimizers = optimizers

    def _owner(self, p: torch.Tensor) -> torch.optim.Optimizer:
        for opt in self.optimizers:
            if any(p is q for g in opt.param_groups for q in g["params"]):
                return opt
        raise KeyError(p)

    def __getitem__(self, p: torch.Tensor) -> Any:
        return self._owner(p).state[p]

    def __setitem__(self, p: torch.Tensor, value: Any) -> None:
        self._owner(p).state[p] = value

    def __delitem__(self, p: torch.Tensor) -> None:
        del self._owner(p).state[p]

    def __iter__(self) -> Iterator[torch.Tensor]:
        for opt in self.optimizers:
            yield from opt.state

    def __len__(self) -> int:
        return sum(len(opt.state) for opt in self.optimizers)


class GroupedOptimizer(torch.optim.Optimizer):
    """Several optimizers (one per optimizer class) stepped as one.

    ``param_groups`` are the children's own group dicts (an LR scheduler that sets
    ``group["lr"]`` sets it in the child), ``step`` evaluates the closure once and steps every
    child, ``state_dict`` / ``load_state_dict`` hold the children's in order.
    """

    def __init__(self, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        if len(optimizers) < 2:
            raise ValueError("GroupedOptimizer needs at least two optimizers")
        self.optimizers = list(optimizers)
        # the base class keeps the very same group dicts (it adds no defaults to them)
        super().__init__([g for opt in self.optimizers for g in opt.param_groups], {})
        self.state = _ChainedState(self.optimizers)  # type: ignore[assignment]

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for opt in self.optimizers:
            opt.step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        for opt in self.optimizers:
            opt.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        return {"optimizers": [opt.state_dict() for opt in self.optimizers]}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        states = state_dict.get("optimizers") if isinstance(state_dict, Mapping) else None
        if not isinstance(states, list) or len(states) != len(self.optimizers):
            raise ValueError(
                f"the saved optimizer state does not hold {len(self.optimizers)} optimizers "
                "(was the checkpoint written with other module.param_groups?)"
            )
        for opt, state in zip(self.optimizers, states, strict=True):
            opt.load_state_dict(state)

    def __repr__(self) -> str:
        return f"GroupedOptimizer({', '.join(type(o).__name__ for o in self.optimizers)})"


def _legacy_groups(model: nn.Module, lr: float, quant_lr_scale: float) -> list[dict[str, Any]]:
    """One optimizer's groups without ``module.param_groups``: weights with decay, ≤ 1-d
    parameters without, quantizer parameters without decay at ``lr * quant_lr_scale``."""
    quant, no_decay, decay = [], [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if "quantizer." in name:
            quant.append(p)
        elif p.ndim <= 1:
            no_decay.append(p)  # BatchNorm weights/biases, layer biases
        else:
            decay.append(p)
    groups = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
    if quant:
        groups.append({"params": quant, "weight_decay": 0.0, "lr": lr * quant_lr_scale})
    return [g for g in groups if g["params"]]


def build_optimizer(
    model: nn.Module,
    main: OptimizerFactory,
    groups: Mapping[str, OptimizerSpec | None] | None = None,
    quant_lr_scale: float = 1.0,
) -> torch.optim.Optimizer:
    """The optimizer of ``model``: ``main`` for every group ``groups`` leaves null, each other
    group with its own spec. Parameters of ≤ 1 dimension and quantizer parameters get no
    weight decay; the quant group's lr is multiplied by ``quant_lr_scale``. Returns a plain
    optimizer when one class serves every group, else a :class:`GroupedOptimizer`."""
    main_spec = OptimizerSpec.of(main)
    if not groups or all(groups.get(g) is None for g in GROUPS):
        lr = main_spec.defaults()["lr"]
        return main(params=_legacy_groups(model, lr, quant_lr_scale))
    by_class: dict[type, tuple[OptimizerSpec, list[dict[str, Any]]]] = {}
    for kind, params in split_parameters(model).items():
        if not params:
            continue
        spec = groups.get(kind) or main_spec
        settings = spec.defaults()
        if kind == "quant":
            settings.update(lr=settings["lr"] * quant_lr_scale, weight_decay=0.0)
        decay = [p for _, p in params if kind != "quant" and p.ndim > 1]
        no_decay = [p for _, p in params if kind == "quant" or p.ndim <= 1]
        entry = by_class.setdefault(spec.cls, (spec, []))
        if decay:
            entry[1].append({**settings, "params": decay, "name": kind})
        if no_decay:
            entry[1].append(
                {**settings, "weight_decay": 0.0, "params": no_decay, "name": f"{kind}/no_decay"}
            )
    optimizers = [spec.cls(dicts, **spec.settings) for spec, dicts in by_class.values()]
    return optimizers[0] if len(optimizers) == 1 else GroupedOptimizer(optimizers)


def named_optimizer(name: str, conf_dir: Path, what: str) -> OptimizerSpec:
    """``conf/optim/<name>.yaml`` (its class and settings), else the torch.optim class."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    path = conf_dir / "optim" / f"{name}.yaml"
    if path.is_file():
        node = OmegaConf.to_container(OmegaConf.load(path), resolve=True)
        settings = {k: v for k, v in node.items() if k not in ("_target_", "_partial_", "name")}
        return OptimizerSpec(get_class(node["_target_"]), settings)
    cls = getattr(torch.optim, name, None)
    if isinstance(cls, type) and issubclass(cls, torch.optim.Optimizer):
        return OptimizerSpec(cls, {})
    known = sorted(p.stem for p in (conf_dir / "optim").glob("*.yaml"))
    raise UserError(
        f"{what}={name!r} is neither an optimizer of conf/optim ({', '.join(known)}) nor a "
        "torch.optim class (e.g. RMSprop)"
    )


def resolve_group_settings(
    param_groups: Mapping[str, Any] | None, main: OptimizerFactory, conf_dir: Path
) -> dict[str, OptimizerSpec | None] | None:
    """``module.param_groups`` as an OptimizerSpec per group (None: the main optimizer).

    A group's ``optimizer`` names conf/optim/<name>.yaml or a torch.optim class (default: the
    main optimizer's); its other keys override that optimizer's settings. Every setting is
    checked against the optimizer (a name it does not take, a value it refuses): UserError.
    """
    if not param_groups:
        return None
    unknown = [k for k in param_groups if k not in GROUPS]
    if unknown:
        raise UserError(
            f"module.param_groups.{unknown[0]} is not a parameter group; the groups are "
            f"{', '.join(GROUPS)}"
        )
    main_spec = OptimizerSpec.of(main)
    resolved: dict[str, OptimizerSpec | None] = {}
    for kind in GROUPS:
        what = f"module.param_groups.{kind}"
        settings = param_groups.get(kind)
        if settings is None:
            resolved[kind] = None
            continue
        if not isinstance(settings, Mapping):
            raise UserError(
                f"{what}={settings!r} must be null (the main optimizer) or a mapping of "
                "settings, e.g. {optimizer: adam, lr: 1.0e-4}"
            )
        settings = dict(settings)
        name = settings.pop("optimizer", None)
        if name is None:
            base = main_spec
        else:
            base = named_optimizer(str(name), conf_dir, f"{what}.optimizer")
        accepted = base.defaults()
        strange = [k for k in settings if k not in accepted]
        if strange:
            raise UserError(
                f"{what}.{strange[0]} is not a setting of {base.cls.__name__} "
                f"(settings: {', '.join(accepted)})"
            )
        spec = OptimizerSpec(base.cls, {**base.settings, **settings})
        try:
            spec.defaults()
        except (TypeError, ValueError) as err:
            reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise UserError(f"{what}: {spec.cls.__name__} refuses {settings} ({reason})") from err
        resolved[kind] = spec
    return resolved
