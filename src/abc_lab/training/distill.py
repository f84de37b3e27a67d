"""Knowledge distillation from a trained teacher (``module.distill``), independent of Lightning.

The student's loss is

    (1 - weight) · CE(s, y)  +  weight · T² · KL(softmax(t/T) || softmax(s/T))
                             +  feature_weight · mean over stages of ‖ŝ - t̂‖²

with s, t the student's and teacher's logits, T the temperature (T² keeps the gradient of
the soft term on the scale of the CE term's, Hinton et al. 2015) and ŝ, t̂ the outputs of
matching stages of the two networks, each sample's flattened output scaled to unit length
(so ‖ŝ - t̂‖² = 2 - 2·cos, whatever the activations' scale).

The teacher is held by :class:`Distiller`, a plain object: it is not a submodule of the
LightningModule, so it is neither in the student's ``state_dict`` (checkpoints stay the
student's) nor among the parameters the optimizer sees.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import UserError

STAGE = re.compile(r"layer\d+")
POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def kd_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """T² · KL(softmax(t/T) || softmax(s/T)), averaged over the batch (computed in float32)."""
    T = float(temperature)
    log_s = F.log_softmax(student_logits.float() / T, dim=1)
    log_t = F.log_softmax(teacher_logits.float() / T, dim=1)
    return F.kl_div(log_s, log_t, log_target=True, reduction="batchmean") * (T * T)


def feature_loss(student: Sequence[Tensor], teacher: Sequence[Tensor]) -> Tensor:
    """Mean over stages of the batch mean of ‖ŝ - t̂‖², ŝ and t̂ the per-sample flattened
    outputs scaled to unit length."""
    if len(student) != len(teacher) or not student:
        raise ValueError(f"{len(student)} student against {len(teacher)} teacher feature maps")
    terms = []
    for s, t in zip(student, teacher, strict=True):
        s_hat = F.normalize(s.float().flatten(1), dim=1)
        t_hat = F.normalize(t.float().flatten(1), dim=1)
        terms.append((s_hat - t_hat).pow(2).sum(dim=1).mean())
    return torch.stack(terms).mean()


def feature_layers(model: nn.Module, names: Sequence[str] | None = None) -> list[str]:
    """The modules whose outputs are matched: ``names`` as given (each must exist), or each
    stage's output: the residual stages ``layer1``, ``layer2``, … of a ResNet, else every
    pooling layer inside the network (the stage ends of a VGG)."""
    modules = dict(model.named_modules())
    if names:
        missing = [n for n in names if n not in modules or not n]
        if missing:
            raise UserError(
                f"module.distill.feature_layers: the model has no module {missing[0]!r}; "
                "name modules as in the model's state_dict (e.g. layer1, layer2.0)"
            )
        return list(names)
    found = [n for n, _ in model.named_children() if STAGE.fullmatch(n)]
    if not found:
        found = [n for n, m in model.named_modules() if type(m) in POOLS]
    if not found:
        raise UserError(
            "module.distill.feature_weight > 0 but the model has no residual stages (layerN) "
            "or pooling layers to match; name them with module.distill.feature_layers"
        )
    return found


class FeatureTap:
    """Forward hooks that keep the outputs of named modules, only while :meth:`capture` is
    open (validation and testing pass through untouched)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.names = list(names)
        self._outputs: dict[str, Tensor] | None = None
        self._handles = [
            model.get_submodule(name).register_forward_hook(self._hook(name)) for name in names
        ]

    def _hook(self, name: str):
        def keep(module: nn.Module, args: object, output: Tensor) -> None:
            if self._outputs is not None:
                self._outputs[name] = output

        return keep

    @contextmanager
    def capture(self) -> Iterator[list[Tensor]]:
        """Collect one forward pass; the list holds the outputs in ``names`` order after it."""
        self._outputs = {}
        collected: list[Tensor] = []
        try:
            yield collected
            collected.extend(self._outputs[n] for n in self.names if n in self._outputs)
        finally:
            self._outputs = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()


class Distiller:
    """A frozen teacher and the distillation terms of the student's loss.

    ``teacher`` is put in eval mode with ``requires_grad`` off and only ever run under
    ``torch.no_grad``; call :meth:`attach` with the student once (it hooks the student's
    stages when ``feature_weight`` > 0) and :meth:`to` to move the teacher with it.
    """

    def __init__(
        self,
        teacher: nn.Module,
        temperature: float = 4.0,
        weight: float = 0.5,
        feature_weight: float = 0.0,
        layers: Sequence[str] | None = None,
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= weight <= 1.0:
            raise ValueError(f"weight must lie in [0, 1], got {weight}")
        if feature_weight < 0:
            raise ValueError(f"feature_weight must be >= 0, got {feature_weight}")
        self.teacher = teacher.eval().requires_grad_(False)
        self.temperature = float(temperature)
        self.weight = float(weight)
        self.feature_weight = float(feature_weight)
        self.layers = feature_layers(teacher, layers) if self.feature_weight > 0 else []
        self._teacher_tap = FeatureTap(teacher, self.layers) if self.layers else None
        self._student_tap: FeatureTap | None = None

    def attach(self, student: nn.Module) -> None:
        """Hook the student's matching stages (feature term only)."""
        if self.layers and self._student_tap is None:
            self._student_tap = FeatureTap(student, self.layers)

    def to(self, device: torch.device | str) -> Distiller:
        self.teacher.to(device)
        return self

    @contextmanager
    def student_features(self) -> Iterator[list[Tensor]]:
        """Open around the student's forward pass: afterwards the list holds its stage
        outputs (empty without a feature term)."""
        if self._student_tap is None:
            yield []
            return
        with self._student_tap.capture() as outputs:
            yield outputs

    def teacher_outputs(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        """The teacher's logits and stage outputs for ``x``, without gradients."""
        self.teacher.eval()
        param = next(self.teacher.parameters(), None)
        if param is not None and x.is_floating_point() and x.dtype != param.dtype:
            x = x.to(param.dtype)
        with torch.no_grad():
            if self._teacher_tap is None:
                return self.teacher(x), []
            with self._teacher_tap.capture() as outputs:
                logits = self.teacher(x)
        return logits, outputs

    def loss(
        self, x: Tensor, logits: Tensor, ce: Tensor, student_features: Sequence[Tensor] = ()
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's total loss and its parts (``ce_loss``, ``distill_loss``: T²·KL,
        ``feature_loss``) for logging."""
        teacher_logits, teacher_features = self.teacher_outputs(x)
        kd = kd_loss(logits, teacher_logits, self.temperature)
        total = (1.0 - self.weight) * ce + self.weight * kd
        parts = {"ce_loss": ce.detach(), "distill_loss": kd.detach()}
        if self.feature_weight > 0:
            feat = feature_loss(student_features, teacher_features)
            total = total + self.feature_weight * feat
            parts["feature_loss"] = feat.detach()
        return total, parts
