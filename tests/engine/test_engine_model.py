"""Export, the packed file and whole-model equality of the engine with the simulated model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from abc_lab.engine.export import export_model
from abc_lab.engine.format import FormatError, load_packed
from abc_lab.engine.runtime import load_model
from abc_lab.models import build_model
from abc_lab.quant import QuantConfig, quantize_model, set_reference_mode

SPEC = {"name": "resnet20", "num_classes": 10, "in_channels": 1, "input_size": 28}
FMNIST = Path("/usr/share/datasets/fashion-mnist")

QUANTS = {
    "fp": QuantConfig(name="fp"),
    "bnn": QuantConfig(name="bnn"),
    "bnn-fan-in": QuantConfig(name="bnn", bnn_scale="fan_in"),
    "bwn": QuantConfig(name="bwn"),
    "xnor": QuantConfig(name="xnor"),
    "abc33": QuantConfig(name="abc", M=3, N=3),
    "abc3w": QuantConfig(name="abc", M=3, N=0),
    "abc22-channel": QuantConfig(name="abc", M=2, N=2, alpha_scope="channel"),
    "abc41-trainable-u": QuantConfig(name="abc", M=4, N=1, trainable_shifts=True),
}


def _model(quant: QuantConfig, seed: int = 0) -> torch.nn.Module:
    """A quantized ResNet-20 with BatchNorm statistics and β, v away from their defaults."""
    torch.manual_seed(seed)
    model = quantize_model(build_model(**SPEC), quant)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.randn(16, 1, 28, 28))
        for name, p in model.named_parameters():
            if name.endswith(("input_quantizer.beta", "input_quantizer.v")):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-12))


@pytest.mark.parametrize("label", list(QUANTS))
def test_export_size_and_logits(label, tmp_path, native):
    quant = QUANTS[label]
    model = _model(quant)
    path = export_model(model, tmp_path / "m.safetensors", SPEC, quant)
    tensors, meta = load_packed(path)
    payload = sum(t.numel() * t.element_size() for t in tensors.values())
    assert payload == meta["payload_bytes"] == meta["summary_packed_bytes"] + meta["buffer_bytes"]
    header = int.from_bytes(path.read_bytes()[:8], "little")  # safetensors: size, JSON, data
    assert path.stat().st_size == 8 + header + payload
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        want = model(x)  # the fused arithmetic of training and validation
        set_reference_mode(model, True)  # the reference arithmetic of test evaluation
        reference = model(x)
        set_reference_mode(model, False)
    assert _rel(reference, want) < 1e-4
    simulated = load_model(path, "simulated")
    assert torch.equal(simulated(x), reference)
    engine = load_model(path, "native")
    binary = [m for _, m in engine.packed_layers() if m.native]
    assert bool(binary) == (quant.name in ("bnn", "xnor") or quant.N > 0 and quant.name == "abc")
    assert torch.equal(engine(x), reference)


@pytest.mark.parametrize("quant", [QuantConfig(name="xnor"), QuantConfig(name="abc", M=2, N=2)])
def test_max_pooled_model_equals_the_reference_with_channels_last_pools(quant, tmp_path, native):
    """ResNet-18's stem max pool runs on channels-last data in the engine (torch's fast
    layout; a maximum does not depend on the order it is taken in): the logits stay those of
    the reference arithmetic, to the bit."""
    spec = {"name": "resnet18", "num_classes": 10, "in_channels": 3, "input_size": 96}
    torch.manual_seed(0)
    model = quantize_model(build_model(**spec), quant).train()
    with torch.no_grad():
        model(torch.randn(4, 3, 96, 96))
    model.eval()
    path = export_model(model, tmp_path / "r18.safetensors", spec, quant)
    engine = load_model(path, "native")
    seen = []
    engine.net.maxpool.register_forward_pre_hook(
        lambda _m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last))
    )
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        set_reference_mode(model, True)
        reference = model(x)
    assert torch.equal(engine(x), reference)
    assert seen == [True]


@pytest.mark.parametrize("quant", [QuantConfig(name="xnor"), QuantConfig(name="abc", M=1, N=1)])
def test_bireal_model_keeps_its_wiring_in_the_engine(quant, tmp_path, native):
    """resnet20_bireal has the modules of resnet20; the model file names the wiring, so the
    engine rebuilds the shortcut around each conv and its logits are the reference's."""
    spec = {**SPEC, "name": "resnet20_bireal"}
    torch.manual_seed(0)
    model = quantize_model(build_model(**spec), quant).train()
    with torch.no_grad():
        model(torch.randn(16, 1, 28, 28))
    model.eval()
    path = export_model(model, tmp_path / "bireal.safetensors", spec, quant)
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        set_reference_mode(model, True)
        reference = model(x)
        plain = quantize_model(build_model(**SPEC), quant).eval()
        plain.load_state_dict(model.state_dict())
        set_reference_mode(plain, True)
        other_wiring = plain(x)
    assert not torch.allclose(other_wiring, reference, atol=1e-3)
    assert torch.equal(load_model(path, "simulated")(x), reference)
    assert torch.equal(load_model(path, "native")(x), reference)


def _fmnist(count: int) -> tuple[torch.Tensor, torch.Tensor]:
    from abc_lab.data.idx import read_idx

    def first(stem: str) -> Path:
        return next(p for p in (FMNIST / stem, FMNIST / f"{stem}.gz") if p.is_file())

    images = torch.from_numpy(read_idx(first("t10k-images-idx3-ubyte"))[:count].copy())
    labels = torch.from_numpy(read_idx(first("t10k-labels-idx1-ubyte"))[:count].copy()).long()
    images = images.float() / 255.0
    return ((images - 0.2860) / 0.3530).unsqueeze(1), labels


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Fashion-MNIST IDX files not installed")
@pytest.mark.parametrize("label", ["xnor", "abc33"])
def test_trained_model_matches_simulation(label, tmp_path, native):
    """A ResNet-20 trained for a few steps on Fashion-MNIST, 256 test images.

    Layer by layer, on the simulation's own inputs, the integer dot products are equal and
    so are the outputs; end to end, the logits of the engine equal those of the simulation
    and of the trained model in the reference arithmetic of test evaluation, to the bit.
    """
    quant = QUANTS[label]
    x, y = _fmnist(256)
    torch.manual_seed(0)
    model = quantize_model(build_model(**SPEC), quant).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for step in range(12):
        idx = torch.arange(step * 32, step * 32 + 64) % len(y)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert min(losses[-3:]) < losses[0]  # the weights, β and v moved with training
    with torch.no_grad():  # BatchNorm statistics of the trained weights, as in evaluation
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.reset_running_stats()
                m.momentum = None
        for i in range(0, 256, 128):
            model(x[i : i + 128])
    model.eval()
    path = export_model(model, tmp_path / "t.safetensors", SPEC, quant)
    engine, simulated = load_model(path, "native"), load_model(path, "simulated")
    inputs: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, i, o, n=n: inputs.__setitem__(n, i[0]))
        for n, m in simulated.packed_layers()
    ]
    with torch.no_grad():
        set_reference_mode(model, True)
        want = model(x)
        assert torch.equal(simulated(x), want)
    for h in hooks:
        h.remove()
    sim_layers = dict(simulated.packed_layers())
    for name, layer in engine.packed_layers():
        assert layer.native, name
        assert torch.equal(layer.dots(inputs[name]), sim_layers[name].dots(inputs[name])), name
        assert torch.equal(layer(inputs[name]), sim_layers[name](inputs[name])), name
    assert torch.equal(engine(x), want)


def _exported(tmp_path: Path) -> Path:
    return export_model(_model(QUANTS["xnor"]), tmp_path / "ok.safetensors", SPEC, QUANTS["xnor"])


def _one_line_error(path: Path) -> str:
    with pytest.raises(FormatError) as err:
        load_model(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_rejects_corrupt_file(tmp_path):
    path = _exported(tmp_path)
    data = bytearray(path.read_bytes())
    data[-100] ^= 0xFF  # one flipped byte inside a tensor
    bad = tmp_path / "corrupt.safetensors"
    bad.write_bytes(bytes(data))
    assert "corrupt" in _one_line_error(bad)


def test_rejects_truncated_file(tmp_path):
    path = _exported(tmp_path)
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert "truncated" in _one_line_error(bad)


def test_rejects_foreign_files(tmp_path):
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(3)}, str(foreign), metadata={"x": "y"})
    assert "not an abc-lab packed model" in _one_line_error(foreign)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello")
    _one_line_error(text)
    other = tmp_path / "v99.safetensors"
    save_file({"w": torch.zeros(3)}, str(other), metadata={"abc_lab": json.dumps(
        {"format": "abc-lab/packed-model", "version": 99})})  # fmt: skip
    assert "version" in _one_line_error(other)
    _one_line_error(tmp_path / "missing.safetensors")


def test_runs_without_kernels(tmp_path):
    """Without compiled kernels the engine says so in one line and runs the simulated path."""
    path = _exported(tmp_path)
    code = (
        "import torch; from abc_lab.engine.runtime import load_model; "
        f"m = load_model({str(path)!r}); "
        "print(m.backend, tuple(m(torch.randn(2, 1, 28, 28)).shape))"
    )
    env = {"ABC_LAB_ENGINE_NATIVE": "0", "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "simulated (2, 10)"
    lines = [ln for ln in done.stderr.splitlines() if "abc-lab engine" in ln]
    assert len(lines) == 1 and "simulated" in lines[0]
