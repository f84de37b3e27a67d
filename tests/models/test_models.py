"""Tests for the model zoo: shapes, stems, layer order, parameter counts, errors, gradients."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from abc_lab.models import build_model, list_models, register_model

EXPECTED_MODELS = {
    "resnet18", "resnet34", "resnet50", "resnet20", "vgg_small",
    "resnet20_bireal", "resnet18_bireal",
}  # fmt: skip


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _convs(model: nn.Module) -> list[tuple[str, nn.Conv2d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def _num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_registry_lists_all_families() -> None:
    assert EXPECTED_MODELS <= set(list_models())
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
@pytest.mark.parametrize(
    ("in_channels", "size", "num_classes"), [(1, 28, 10), (3, 32, 7)], ids=["1x28", "3x32"]
)
def test_output_shape(name: str, in_channels: int, size: int, num_classes: int) -> None:
    model = build_model(name, num_classes=num_classes, in_channels=in_channels, input_size=size)
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(2, in_channels, size, size))
    assert out.shape == (2, num_classes)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_smallest_input_size_works(name: str) -> None:
    model = build_model(name, num_classes=3, in_channels=1, input_size=8).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_stem_is_first_conv_and_fc_is_last_linear(name: str) -> None:
    """Registration order must match execution order: first conv run = first registered."""
    model = build_model(name, num_classes=5, in_channels=1, input_size=28)
    called: list[nn.Module] = []
    hooks = [
        m.register_forward_pre_hook(lambda mod, _inp: called.append(mod))
        for m in model.modules()
        if isinstance(m, nn.Conv2d | nn.Linear)
    ]
    model(torch.randn(2, 1, 28, 28))
    for h in hooks:
        h.remove()

    convs, linears = _convs(model), _linears(model)
    stem_name, stem = convs[0]
    fc_name, fc = linears[-1]
    assert stem.in_channels == 1
    assert all(m.in_channels != 1 for _, m in convs[1:])
    assert stem_name in {"conv1", "features.0"}
    assert called[0] is stem
    assert fc_name == "fc" and fc is called[-1]
    assert fc.out_features == 5 and fc.bias is not None
    assert [m for m in called if isinstance(m, nn.Linear)] == [fc]
    assert all(m.bias is None for _, m in convs), "convs must have bias=False"


@pytest.mark.parametrize("name", sorted(EXPECTED_MODELS))
def test_binarised_convs_see_zero_centred_input(name: str) -> None:
    """Every conv after the stem (shortcut convs aside) gets a BN output with both signs."""
    model = build_model(name, num_classes=10, in_channels=3, input_size=32).train()
    seen: dict[str, tuple[float, float]] = {}
    hooks = []
    for conv_name, conv in _convs(model)[1:]:
        if "downsample" in conv_name:
            continue

        def hook(_mod: nn.Module, inp: tuple[torch.Tensor], key: str = conv_name) -> None:
            seen[key] = (inp[0].min().item(), inp[0].max().item())

        hooks.append(conv.register_forward_pre_hook(hook))
    model(torch.rand(4, 3, 32, 32))  # raw pixels in [0, 1): the stem input is all >= 0
    for h in hooks:
        h.remove()
    assert seen, "no binarisable convs found"
    one_signed = [k for k, (lo, hi) in seen.items() if not lo < 0 < hi]
    assert not one_signed, f"convs fed a one-signed input (BN missing before them): {one_signed}"


def test_vgg_small_layout_pool_after_conv() -> None:
    model = build_model("vgg_small")
    layers = list(model.features)
    widths = [m.out_channels for m in layers if isinstance(m, nn.Conv2d)]
    assert widths == [128, 128, 256, 256, 512, 512]
    pools = [i for i, m in enumerate(layers) if isinstance(m, nn.MaxPool2d)]
    assert len(pools) == 3
    for i in pools:
        assert isinstance(layers[i - 1], nn.Conv2d) and isinstance(layers[i + 1], nn.ReLU)
    for i, m in enumerate(layers):
        if isinstance(m, nn.Conv2d) and i > 0:
            assert isinstance(layers[i - 1], nn.BatchNorm2d)


@pytest.mark.parametrize(
    ("size", "kernel", "has_maxpool"), [(28, 3, False), (64, 3, False), (65, 7, True)]
)
def test_resnet_stem_switches_on_input_size(size: int, kernel: int, has_maxpool: bool) -> None:
    model = build_model("resnet18", input_size=size)
    assert model.conv1.kernel_size == (kernel, kernel)
    assert model.conv1.stride == ((1, 1) if kernel == 3 else (2, 2))
    assert isinstance(model.maxpool, nn.MaxPool2d) is has_maxpool


def test_resnet18_imagenet_matches_torchvision() -> None:
    model = build_model("resnet18", num_classes=1000, in_channels=3, input_size=224).eval()
    assert model.conv1.kernel_size == (7, 7)
    assert model.conv1.stride == (2, 2)
    assert isinstance(model.maxpool, nn.MaxPool2d)
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)
    ours, theirs = _num_params(model), _num_params(torchvision.models.resnet18())
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_deeper_resnets_param_count_matches_torchvision(name: str) -> None:
    ours = _num_params(build_model(name, num_classes=1000, input_size=224))
    theirs = _num_params(getattr(torchvision.models, name)())
    assert abs(ours - theirs) / theirs < 0.01, (ours, theirs)


def test_resnet50_imagenet_forward() -> None:
    model = build_model("resnet50", num_classes=1000, input_size=224).eval()
    assert model.fc.in_features == 2048
    with torch.no_grad():
        assert model(torch.randn(1, 3, 224, 224)).shape == (1, 1000)


def test_resnet20_cifar_layout() -> None:
    model = build_model("resnet20")
    assert model.conv1.kernel_size == (3, 3) and model.conv1.out_channels == 16
    stages = [model.layer1, model.layer2, model.layer3]
    assert [len(s) for s in stages] == [3, 3, 3]
    assert [s[-1].conv2.out_channels for s in stages] == [16, 32, 64]
    assert not hasattr(model, "layer4")
    # 20 weighted layers: stem + 18 block convs + fc (1x1 shortcut convs are extra)
    block_convs = [n for n, _ in _convs(model) if "downsample" not in n]
    assert len(block_convs) + 1 == 20
    assert 0.26e6 < _num_params(model) < 0.28e6


def test_init_kaiming_and_batchnorm() -> None:
    model = build_model("resnet20")
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = model.layer3[1].conv1  # 64 -> 64, 3x3: fan_out = 576
    expected_std = (2.0 / (64 * 9)) ** 0.5
    assert conv.weight.std().item() == pytest.approx(expected_std, rel=0.1)


def test_unknown_model_name() -> None:
    with pytest.raises(ValueError, match="resnet999") as excinfo:
        build_model("resnet999")
    assert "resnet18" in str(excinfo.value) and "vgg_small" in str(excinfo.value)


@pytest.mark.parametrize(
    ("kwargs", "arg"),
    [
        ({"num_classes": 0}, "num_classes"),
        ({"in_channels": 0}, "in_channels"),
        ({"input_size": 7}, "input_size"),
        ({"num_classes": 2.5}, "num_classes"),
        ({"in_channels": True}, "in_channels"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        build_model("resnet20", **kwargs)  # type: ignore[arg-type]


def test_duplicate_registration_rejected() -> None:
    with pytest.raises(ValueError, match="resnet20"):
        register_model("resnet20")(lambda **_: nn.Identity())


def test_resnet20_backward_reaches_every_parameter() -> None:
    model = build_model("resnet20", num_classes=10, in_channels=1, input_size=28).train()
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    nn.functional.cross_entropy(model(x), y).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"{name} got an all-zero gradient"


@pytest.mark.parametrize(
    ("bireal", "plain"), [("resnet20_bireal", "resnet20"), ("resnet18_bireal", "resnet18")]
)
def test_bireal_models_have_the_plain_modules_with_a_shortcut_around_each_conv(bireal, plain):
    from abc_lab.models.resnet import BasicBlock, BiRealBlock

    a = build_model(bireal, num_classes=10, in_channels=1, input_size=28).eval()
    b = build_model(plain, num_classes=10, in_channels=1, input_size=28).eval()
    assert {k: v.shape for k, v in a.state_dict().items()} == {
        k: v.shape for k, v in b.state_dict().items()
    }
    blocks = [m for m in a.modules() if isinstance(m, BasicBlock)]
    assert blocks and all(type(m) is BiRealBlock for m in blocks)
    # one block by hand, a shape-changing one (its first shortcut is the 1x1 downsample)
    block = next(m for m in blocks if m.downsample is not None)
    x = torch.randn(2, block.conv1.in_channels, 8, 8)
    with torch.no_grad():
        h = torch.relu(block.conv1(block.bn1(x)) + block.downsample(x))
        want = torch.relu(block.conv2(block.bn2(h)) + h)
        assert torch.allclose(block(x), want, atol=1e-6)
        plain_out = BasicBlock.forward(block, x)  # the same modules wired as resnet's
        assert not torch.allclose(plain_out, want, atol=1e-3)
