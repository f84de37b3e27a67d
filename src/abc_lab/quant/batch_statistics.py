"""A model in training mode whose BatchNorm layers normalise with each batch's statistics
without updating their running statistics: how the probes and the activation calibration
look at what training steps see, leaving the model as they found it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from torch import nn


@contextmanager
def batch_statistics(model: nn.Module) -> Iterator[nn.Module]:
    """Inside: ``model`` in training mode, every BatchNorm on batch statistics with its
    running mean, variance and batch count unchanged (momentum 0). On exit every module's
    mode, momentum and batch count are restored."""
    modes = [(m, m.training) for m in model.modules()]
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [
        (m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone())
        for m in norms
    ]
    model.train()
    for m in norms:
        m.momentum = 0.0
    try:
        yield model
    finally:
        for m, (momentum, tracked) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked = tracked
        for m, training in modes:
            m.training = training
