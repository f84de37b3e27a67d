import pytest
import torch
from torch import nn

from abc_lab.quant.batch_statistics import batch_statistics


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.BatchNorm2d(4))
    net[1].running_mean.fill_(3.0)
    net[1].running_var.fill_(9.0)
    return net


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_normalises_with_batch_statistics_and_leaves_the_running_ones():
    net = _net().eval()
    net[2].train()  # a module whose own mode differs from the model's
    before = _state(net)
    x = torch.randn(8, 2, 6, 6) * 5 + 2
    with batch_statistics(net) as same:
        assert same is net and all(m.training for m in net.modules())
        assert {m.momentum for m in net.modules() if isinstance(m, nn.BatchNorm2d)} == {0.0}
        out = net[1](net[0](x))
    # batch statistics: every channel of this batch is centred and scaled to unit variance
    assert out.mean(dim=(0, 2, 3)).abs().max() < 1e-5
    assert (out.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-3
    after = _state(net)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # running stats and batch counts kept
    assert [m.training for m in net.modules()] == [False, False, False, True, False]
    assert net[1].momentum == 0.1


def test_restores_everything_when_the_body_raises():
    net = _net().train()
    net[1].momentum = None  # cumulative average
    before = _state(net)
    with pytest.raises(RuntimeError, match="boom"), batch_statistics(net):
        net(torch.randn(4, 2, 6, 6))
        raise RuntimeError("boom")
    assert net[1].momentum is None and net[3].momentum == 0.1
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(m.training for m in net.modules())
