"""The LightningModule: cross-entropy classification with top-1/top-5 and quantizer logging."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import lightning.pytorch as pl
import torch
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from ..quant import ABCInput, ABCWeight, QuantConv2d, QuantLinear, set_reference_mode
from .distill import Distiller
from .optimizers import OptimizerSpec, build_optimizer


def quant_parameters(model: nn.Module) -> dict[str, dict[str, list[float]]]:
    """Current α, β, v (and weight shifts u) of every quantized layer, by layer name."""
    out: dict[str, dict[str, list[float]]] = {}
    for name, layer in model.named_modules():
        if not isinstance(layer, QuantConv2d | QuantLinear):
            continue
        entry: dict[str, list[float]] = {}
        kernel, inp = layer.kernel_quantizer, layer.input_quantizer
        if isinstance(kernel, ABCWeight):
            with torch.no_grad():
                _, alpha = kernel.decompose(layer.weight)
            entry["alpha"] = alpha.reshape(alpha.shape[0], -1).mean(dim=1).tolist()
            entry["shifts"] = kernel.shifts.detach().tolist()
        if isinstance(inp, ABCInput):
            entry["beta"] = inp.beta.detach().tolist()
            entry["v"] = inp.v.detach().tolist()
        if entry:
            out[name] = entry
    return out


class ClassifierModule(pl.LightningModule):
    """Trains ``model`` with cross-entropy; logs loss, top-1/top-5 and the quantizers.

    ``optimizer`` and ``scheduler`` are partials from the config; the scheduler is given
    ``total_steps`` and ``steps_per_epoch`` and stepped every optimizer step. Quantizer
    parameters (v, β, u) get ``lr * quant_lr_scale`` and, like BatchNorm and biases, no
    weight decay. ``param_groups`` (resolved ``module.param_groups``) gives the binary, quant
    and float parameters optimizers of their own (``optimizers.build_optimizer``).
    ``distiller`` adds a frozen teacher's terms to the training loss (``distill.Distiller``);
    it is a plain object, so the teacher stays out of this module's state_dict.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        scheduler: Callable[..., torch.optim.lr_scheduler.LRScheduler] | None,
        num_classes: int,
        label_smoothing: float = 0.0,
        quant_lr_scale: float = 1.0,
        log_quant_every_n_epochs: int = 1,
        param_groups: Mapping[str, OptimizerSpec | None] | None = None,
        distiller: Distiller | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.optimizer_factory = optimizer
        self.scheduler_factory = scheduler
        self.group_settings = dict(param_groups) if param_groups else None
        self.distiller = distiller
        if distiller is not None:
            distiller.attach(model)
        self.quant_lr_scale = quant_lr_scale
        self.log_quant_every = log_quant_every_n_epochs
        self.criterion = nn.CrossEntropyLoss(label_smoothing=label_smoothing)
        # "acc5" is top-min(5, classes), so tiny datasets still get both metrics
        self.topk = {"acc1": 1, "acc5": min(5, num_classes)}
        self.metrics = nn.ModuleDict(
            {
                f"{stage}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for stage in ("train", "val", "test")
                for name, k in self.topk.items()
            }
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch, stage: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.criterion(logits, y)
        self._log_metrics(stage, loss, logits, y)
        return loss

    def _log_metrics(self, stage: str, loss: torch.Tensor, logits: torch.Tensor, y) -> None:
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True)
        for name in self.topk:
            metric = self.metrics[f"{stage}_{name}"]
            metric(logits, y)
            self.log(
                f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=name == "acc1"
            )

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        if self.distiller is None:
            return self._step(batch, "train")
        x, y = batch
        with self.distiller.student_features() as features:
            logits = self(x)
        ce = self.criterion(logits, y)
        loss, parts = self.distiller.loss(x, logits, ce, features)
        for name, value in parts.items():
            self.log(f"train/{name}", value, on_step=False, on_epoch=True)
        self._log_metrics("train", loss, logits, y)
        return loss

    def on_fit_start(self) -> None:
        if self.distiller is not None:  # not a submodule: moved with the student by hand
            self.distiller.to(self.device)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._step(batch, "test")

    def on_test_start(self) -> None:
        # the test set is evaluated in the reference arithmetic, Σ_m Σ_n α_m β_n op(B_m, A_n)
        # with exact integer dot products, which the bitwise engine reproduces bit for bit
        # (the fused path of training and validation computes the same sum, rounded
        # differently); a model without quantized layers is unaffected
        set_reference_mode(self.model, True)

    def on_test_end(self) -> None:
        set_reference_mode(self.model, False)

    def on_train_epoch_end(self) -> None:
        if self.log_quant_every <= 0 or self.current_epoch % self.log_quant_every:
            return
        for layer, params in quant_parameters(self.model).items():
            for kind, values in params.items():
                for i, value in enumerate(values):
                    self.log(f"quant/{layer}/{kind}_{i}", value, on_epoch=True, sync_dist=False)

    def configure_optimizers(self):
        optimizer = build_optimizer(
            self.model, self.optimizer_factory, self.group_settings, self.quant_lr_scale
        )
        if self.scheduler_factory is None:
            return optimizer
        total = int(self.trainer.estimated_stepping_batches)
        epochs = max(int(self.trainer.max_epochs or 1), 1)
        scheduler = self.scheduler_factory(
            optimizer, total_steps=total, steps_per_epoch=max(total // epochs, 1)
        )
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
