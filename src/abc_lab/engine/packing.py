"""Bit packing: the file's compact form and the kernels' word layout.

Convention everywhere: bit 1 stands for -1, bit 0 for +1 (sign(0) = +1, as in training),
so a binary dot product over K values is K - 2·popcount(a XOR b).

File form: the bases B of a layer, shape (M, C_out, C_in, KH, KW), flattened in that order
and packed 8 per byte, least significant bit first; M·numel bits in ceil(M·numel / 8) bytes.
Kernel form: per base m, groups of 8 output channels, words of 64 input channels per tap:
``w[m][g][(ky·KW + kx)·Cw + cw][j]`` (int64), C_in and C_out padded with 0 bits.
"""

from __future__ import annotations

import torch
from torch import Tensor

LANES = 8  # output channels per weight group in the kernels
WORD = 64


def pack_bits(negative: Tensor) -> Tensor:
    """Pack a bool tensor (True = -1) into uint8, LSB first, over its flattened order."""
    flat = negative.reshape(-1).to(torch.uint8)
    pad = (-flat.numel()) % 8
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    weights = torch.tensor([1 << i for i in range(8)], dtype=torch.uint8)
    return (flat.view(-1, 8) * weights).sum(dim=1, dtype=torch.uint8)


def unpack_bits(packed: Tensor, count: int) -> Tensor:
    """The first ``count`` bits of a uint8 tensor packed by ``pack_bits``, as bool (True = -1)."""
    shifts = torch.arange(8, dtype=torch.uint8)
    bits = (packed.reshape(-1, 1) >> shifts) & 1
    return bits.reshape(-1)[:count].bool()


def signs(negative: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """±1 values from bits (True = -1)."""
    return 1.0 - 2.0 * negative.to(dtype)


def _words(bits: Tensor) -> Tensor:
    """Bool (..., 64) -> int64 (...): bit i of the word is element i."""
    shifts = torch.arange(WORD, dtype=torch.int64)
    return (bits.to(torch.int64) << shifts).sum(dim=-1)


def kernel_weights(negative: Tensor) -> tuple[Tensor, Tensor]:
    """Kernel layout of bases (M, C_out, C_in, KH, KW) given as bool (True = -1).

    Returns ``w`` int64 (M, G, KH·KW·Cw, 8) and ``wpc`` int32 (M, KH·KW, G·8): the popcount
    of each tap's weight bits per output channel, which the kernels use to remove the
    contribution of taps that fall into the zero padding.
    """
    M, Co, Ci, KH, KW = negative.shape
    G, Cw = -(-Co // LANES), -(-Ci // WORD)
    bits = torch.zeros(M, G * LANES, KH, KW, Cw * WORD, dtype=torch.bool)
    bits[:, :Co, :, :, :Ci] = negative.permute(0, 1, 3, 4, 2)
    words = _words(bits.view(M, G * LANES, KH, KW, Cw, WORD))  # (M, G·8, KH, KW, Cw)
    w = words.view(M, G, LANES, KH * KW * Cw).permute(0, 1, 3, 2).contiguous()
    wpc = bits.sum(dim=-1).view(M, G * LANES, KH * KW).permute(0, 2, 1)
    return w, wpc.to(torch.int32).contiguous()
