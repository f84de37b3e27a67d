"""Bit-exactness of the bitwise convolution against float convolutions on ±1 values.

Every (M, N) up to 5, strides 1 and 2, padding 0 and 1, channel counts that are and are not
multiples of 64, odd spatial sizes; on every instruction set this CPU runs. Integer dot
products must be equal; the combined float output within float rounding.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from abc_lab.engine.packing import kernel_weights, pack_bits, unpack_bits
from abc_lab.engine.runtime import PackedConv2d

CHANNELS = (3, 16, 24, 48, 64, 96)
MN = list(itertools.product(range(1, 6), range(1, 6)))


def _cases() -> list[tuple]:
    """One layer per (M, N), cycling through channels, strides, paddings and sizes."""
    cases = []
    for i, (M, N) in enumerate(MN):
        c_in = CHANNELS[i % len(CHANNELS)]
        c_out = CHANNELS[(i * 5 + 2) % len(CHANNELS)]
        stride, pad = (1, 2)[i % 2], (0, 1)[(i // 2) % 2]
        k = 1 if i % 7 == 6 else 3
        size = (5, 7, 9, 11)[i % 4]
        cases.append((M, N, c_in, c_out, k, stride, pad, size))
    # wider than one 64-bit word per tap and a kernel wider than the image's border
    cases.append((2, 2, 130, 72, 3, 2, 1, 9))
    cases.append((1, 1, 64, 64, 5, 1, 1, 7))
    return cases


def layer_pair(M, N, c_in, c_out, k, stride, pad, seed=0, scope="channel", kind="abc"):
    """The same random packed layer, bitwise (native) and simulated."""
    g = torch.Generator().manual_seed(seed)
    negative = torch.rand(M, c_out, c_in, k, k, generator=g) < 0.5
    alpha_shape = [M, c_out] if scope == "channel" else [M]
    tensors = {
        "L.weight_bits": pack_bits(negative),
        "L.alpha": torch.rand(*alpha_shape, generator=g) + 0.1,
        "L.input_quantizer.v": torch.randn(N, generator=g) * 0.5 + 0.5,
        "L.input_quantizer.beta": torch.rand(N, generator=g) + 0.1,
    }
    entry = dict(
        type="conv2d", shape=[c_out, c_in, k, k], M=M, N=N, weight="abc", input=kind,
        alpha_shape=alpha_shape, bias=False, stride=[stride] * 2, padding=[pad] * 2,
        dilation=[1, 1], groups=1,
    )  # fmt: skip
    return (
        PackedConv2d("L", entry, tensors, "native"),
        PackedConv2d("L", entry, tensors, "simulated"),
    )


def test_pack_roundtrip():
    bits = torch.rand(3, 5, 7, 3, 3) < 0.5
    packed = pack_bits(bits)
    assert packed.numel() == -(-bits.numel() // 8)
    assert torch.equal(unpack_bits(packed, bits.numel()).view_as(bits), bits)


def test_kernel_layout_masks_padding_bits():
    neg = torch.ones(1, 3, 70, 1, 1, dtype=torch.bool)  # 70 channels: 2 words, 58 unused bits
    w, wpc = kernel_weights(neg)
    assert w.shape == (1, 1, 2, 8)
    assert int(w[0, 0, 0, 0]) == -1 and int(w[0, 0, 1, 0]) == (1 << 6) - 1
    assert int(w[0, 0, 0, 3]) == 0  # output channels 3..7 are padding
    assert wpc[0, 0, :3].tolist() == [70, 70, 70] and wpc[0, 0, 3:].tolist() == [0] * 5


@pytest.mark.parametrize("case", _cases(), ids=lambda c: "M{}N{}-c{}to{}-k{}s{}p{}-{}".format(*c))
def test_bitwise_conv_exact(case, isas, monkeypatch):
    M, N, c_in, c_out, k, stride, pad, size = case
    native_layer, simulated = layer_pair(*case[:7], seed=len(case) + M * 10 + N)
    x = torch.randn(2, c_in, size, size + 2)
    x[0, 0, 0, :2] = 0.0  # exact zeros and threshold ties binarise to +1
    x[1, :, 1, 1] = simulated.thresholds[0]
    want_dots = simulated.dots(x)
    want = simulated(x)
    for isa in isas:
        monkeypatch.setenv("ABC_LAB_ENGINE_ISA", isa)
        dots = native_layer.dots(x)
        assert dots.shape == want_dots.shape
        assert torch.equal(dots, want_dots), f"{isa}: integer dot products differ"
        out = native_layer(x)
        assert out.shape == want.shape
        scale = want.abs().max().clamp_min(1.0)
        assert float((out - want).abs().max() / scale) < 1e-5, isa


@pytest.mark.parametrize("kind", ["sign", "abc"])
def test_zero_padding_is_not_pm1_padding(kind, native):
    """A border output counts only valid taps: it differs from padding with +1 or -1."""
    native_layer, simulated = layer_pair(1, 1, 8, 8, 3, 1, 1, kind=kind)
    x = torch.randn(1, 8, 5, 5)
    dots = native_layer.dots(x)[0, 0, 0]  # (OH, OW, C_out)
    A = torch.where(x >= native_layer.thresholds[0], 1.0, -1.0)
    B = native_layer.bases[0]
    for value in (1.0, -1.0):
        padded = torch.nn.functional.pad(A, (1, 1, 1, 1), value=value)
        pm1 = torch.nn.functional.conv2d(padded, B).round().long()[0].permute(1, 2, 0)
        assert torch.equal(dots[1:-1, 1:-1], pm1[1:-1, 1:-1])
        assert not torch.equal(dots[0], pm1[0])
    assert torch.equal(dots, simulated.dots(x)[0, 0, 0])


def test_threads_give_identical_results(native):
    native_layer, _ = layer_pair(3, 3, 48, 40, 3, 2, 1)
    x = torch.randn(3, 48, 11, 11)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = native_layer(x)
        torch.set_num_threads(max(2, before))
        many = native_layer(x)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(one, many)


def test_inference_bench_takes_the_faster_torch_layout_and_times_every_configuration(native):
    """The engine bench's baseline is torch's faster float32 layout, named in each row, and
    every configuration (network and per-layer rows, whole-run latency) gets its own timing."""
    from abc_lab.engine.bench import (
        FP32_LAYOUTS,
        MODELS,
        bench_model,
        bench_run_latency,
        engine_for,
    )
    from abc_lab.models import build_model
    from abc_lab.quant import parse_quant_spec

    rows = bench_model("resnet20", ["fp", "xnor"], batch=1, threads=1, rounds=2, bf16=False)
    assert {r.config for r in rows if r.scope == "network"} == {"fp", "xnor"}
    assert any(r.scope != "network" for r in rows)
    for r in rows:
        assert r.fp32_layout in FP32_LAYOUTS and r.bf16_ms is None
        assert 0 < r.fp32_min_ms <= r.fp32_ms and 0 < r.engine_min_ms <= r.engine_ms
    spec = MODELS["resnet20"]
    engine = engine_for(build_model(**spec).eval(), spec, parse_quant_spec("xnor"))
    (row,) = bench_run_latency(engine, batches=[2], threads=[1], rounds=2)
    assert row["fp32_layout"] in FP32_LAYOUTS and row["bf16_ms"] > 0
    assert row["speedup_fp32"] == pytest.approx(row["fp32_ms"] / row["engine_ms"])
