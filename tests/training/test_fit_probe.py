"""The probe behind the sixth recipe study's "why xnor misses": top-1 of a trained network,
BatchNorm re-estimation and the share of sign inputs inside the straight-through window."""

from __future__ import annotations

import torch
from torch import nn

from abc_lab.initcheck import evaluate, recalibrate_bn
from abc_lab.models import build_model
from abc_lab.quant import parse_quant_spec, quantize_model
from abc_lab.training.fit_probe import sign_window_shares


def test_top1_counts_the_right_answers_in_eval_mode() -> None:
    model = nn.Sequential(nn.Dropout(0.9), nn.Identity())  # dropout would change it in training
    x = torch.eye(4)
    batches = [(x[:2], torch.tensor([0, 0])), (x[2:], torch.tensor([2, 3]))]
    assert evaluate(model, batches, 4)[0] == 0.75
    assert not model.training


def test_reestimated_batchnorm_holds_the_plain_mean_of_all_batches() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3, momentum=0.1)
    model = nn.Sequential(bn)
    batches = [(torch.randn(8, 3) * s + s, None) for s in (1.0, 2.0, 3.0)]
    recalibrate_bn(model, batches, len(batches))
    expected = torch.stack([x.mean(0) for x, _ in batches]).mean(0)
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)


def test_sign_window_shares_are_those_of_each_sign_layer_input() -> None:
    torch.manual_seed(0)
    spec = dict(name="resnet20", num_classes=10, in_channels=1, input_size=28)
    model = quantize_model(build_model(**spec), parse_quant_spec("xnor"))
    x = torch.randn(16, 1, 28, 28)
    first = model.layer1[0]
    norm = first.bn1
    running = norm.running_mean.clone()
    shares = sign_window_shares(model, x)
    assert len(shares) == 18  # every binary conv of ResNet-20
    assert all(0.0 <= s <= 1.0 for s in shares.values())
    assert torch.equal(norm.running_mean, running)  # running statistics left alone
    # the first block's first conv sees its bn1 of the stem's output, in training mode
    bn = lambda m, t: nn.functional.batch_norm(t, None, None, m.weight, m.bias, training=True)  # noqa: E731
    with torch.no_grad():
        stem = model.maxpool(model.relu(bn(model.bn1, model.conv1(x))))
        inputs = bn(norm, stem)
    assert abs(shares["layer1.0.conv1"] - float((inputs.abs() <= 1).float().mean())) < 1e-6
    fp = build_model(**spec)
    assert sign_window_shares(fp, x) == {}
