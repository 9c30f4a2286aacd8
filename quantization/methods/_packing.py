"""Signed ``bits``-bit integers packed densely into ``uint8`` bytes, and back: ``ceil(n * bits / 8)`` bytes.

Every width, 2 to 8, is packed densely, 8 values into ``bits`` bytes, least significant bits first:
4-bit values sit two per byte (low nibble first), 2-bit values four per byte, and 3-bit values take
3/8 of a byte instead of the 1/2 a 4-bit container would spend (25 % smaller; 5, 6 and 7 bits save
37, 25 and 12 % against a byte each). Dense packing costs only at pack and unpack time, which the
weight-only methods spend once, at quantization and at load. Values are stored offset by
``2**(bits - 1)`` (offset binary), so a code is a plain unsigned field.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

_VALUES_PER_WORD = 8  # 8 values of `bits` bits fill exactly `bits` bytes, for every width


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes that :func:`pack` spends on ``numel`` values of ``bits`` bits.

    >>> packed_bytes(7840, 4), packed_bytes(7840, 3), packed_bytes(10, 3)
    (3920, 2940, 4)
    """
    return -(-numel * bits // 8)


def _check_bits(bits: int) -> None:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"Expected `bits` in [1, 8], got {bits!r}.")


def pack(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed integers in ``[-2**(bits-1), 2**(bits-1) - 1]`` (any shape, read flat) -> ``(ceil(n*bits/8),)`` uint8.

    >>> pack(torch.tensor([-8, 7, 0, 1]), bits=4)  # codes 0, 15, 8, 9: two per byte, low nibble first
    tensor([240, 152], dtype=torch.uint8)
    >>> pack(torch.tensor([-1, 0, 1, 1, -2]), bits=2)  # codes 1, 2, 3, 3 | 0
    tensor([249,   0], dtype=torch.uint8)
    >>> pack(torch.arange(-4, 4), bits=3)  # 8 values in 3 bytes
    tensor([136, 198, 250], dtype=torch.uint8)
    """
    _check_bits(bits)
    if values.is_floating_point() or values.is_complex() or values.dtype == torch.bool:
        raise ValueError(f"Expected integer values to pack, got {values.dtype}.")
    low, high = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    flat = values.detach().reshape(-1).to(torch.int64)
    if flat.numel() and (int(flat.min()) < low or int(flat.max()) > high):
        found = int(flat.min()) if int(flat.min()) < low else int(flat.max())
        raise ValueError(f"Expected {bits}-bit values in [{low}, {high}], got {found}.")
    codes = flat - low  # offset binary: [0, 2**bits)
    if bits == 8:  # one value per byte; the word below would overflow int64
        return codes.to(torch.uint8)
    words = F.pad(codes, (0, -codes.numel() % _VALUES_PER_WORD)).view(-1, _VALUES_PER_WORD)
    # (W, 8) codes -> (W,) words of 8 * bits bits: disjoint fields, so the sum is a bitwise or
    words = (words << (torch.arange(_VALUES_PER_WORD) * bits)).sum(dim=1)
    packed = (words.unsqueeze(1) >> (torch.arange(bits) * 8)) & 0xFF  # (W, bits) bytes, little end first
    return packed.to(torch.uint8).reshape(-1)[: packed_bytes(flat.numel(), bits)]


def unpack(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The ``numel`` signed values :func:`pack` stored in ``packed``, as a flat int8 tensor.

    >>> unpack(torch.tensor([240, 152], dtype=torch.uint8), bits=4, numel=4)
    tensor([-8,  7,  0,  1], dtype=torch.int8)
    >>> unpack(pack(torch.arange(-4, 4), bits=3), bits=3, numel=8)
    tensor([-4, -3, -2, -1,  0,  1,  2,  3], dtype=torch.int8)
    """
    _check_bits(bits)
    if packed.dtype != torch.uint8 or packed.dim() != 1 or packed.numel() != packed_bytes(numel, bits):
        raise ValueError(
            f"Expected {packed_bytes(numel, bits)} packed uint8 bytes for {numel} {bits}-bit values, "
            f"got {tuple(packed.shape)} {packed.dtype}."
        )
    low = -(1 << (bits - 1))
    if bits == 8:
        return (packed.to(torch.int16) + low).to(torch.int8)
    words = -(-numel // _VALUES_PER_WORD)
    chunks = F.pad(packed.to(torch.int64), (0, words * bits - packed.numel())).view(words, bits)
    chunks = (chunks << (torch.arange(bits) * 8)).sum(dim=1)  # (W, bits) bytes -> (W,) words
    codes = (chunks.unsqueeze(1) >> (torch.arange(_VALUES_PER_WORD) * bits)) & ((1 << bits) - 1)  # (W, 8)
    return (codes.reshape(-1)[:numel] + low).to(torch.int8)
