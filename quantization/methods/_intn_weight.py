"""The 2-8 bit weight-only family: symmetric integer weights, one bf16 scale per output channel or per
group of input columns, packed densely (``_packing``), dequantized once when the artifact loads.

:func:`fake_quantize` is the whole arithmetic, as a pure differentiable function: the artifact's
dequantized weights equal it bit for bit, and quantization-aware training reuses it unchanged.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from quantization.methods._packing import pack, unpack
from quantization.torch_artifact import Encoded, LinearCodec

MIN_GROUP_SIZE = 8  # bf16 scales cost 16/group_size bits per weight: 2 at 8, more below
_TINY = 1e-12  # an all-zero row or group still gets a usable (positive) scale


def levels(bits: int) -> int:
    """The largest code of a symmetric ``bits``-bit grid, ``2**(bits-1) - 1``: codes lie in ``[-levels, levels]``.

    >>> [levels(b) for b in (2, 3, 4, 8)]
    [1, 3, 7, 127]
    """
    return 2 ** (bits - 1) - 1


def check_group_size(method: str, group_size: int | None) -> None:
    """Refuse a group size that is not ``None`` or an integer >= :data:`MIN_GROUP_SIZE`, in one line."""
    if group_size is None:
        return
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < MIN_GROUP_SIZE:
        raise ValueError(
            f"Expected `settings.{method}.group_size` to be null (one scale per output channel) "
            f"or an integer >= {MIN_GROUP_SIZE}, got {group_size!r}."
        )


def group_scales(weight: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """One scale ``absmax / levels(bits)`` per row (``group_size=None``) or per ``group_size`` input columns.

    ``(out, in) -> (out, ceil(in / group_size))``, rounded to bf16: what the artifact stores (fp32's
    range, 8 significant bits; a 0.2 % scale error is nothing next to a 1/14 rounding step). The last
    group of a row whose ``in`` is not a multiple of ``group_size`` holds the remaining columns only:
    it is padded with zeros, which never raise an absmax. Computed from ``weight.detach()``: a constant
    for autograd.

    >>> group_scales(torch.tensor([[0.7, -1.4, 0.0, 0.35, 0.07]]), bits=4, group_size=2)
    tensor([[0.2002, 0.0500, 0.0100]], dtype=torch.bfloat16)
    """
    out_features, in_features = weight.shape
    size = in_features if group_size is None else group_size
    groups = math.ceil(in_features / size)
    padded = F.pad(weight.detach().float().abs(), (0, groups * size - in_features))  # (out, groups * size)
    absmax = padded.view(out_features, groups, size).amax(dim=2)  # (out, groups)
    return (absmax.clamp_min(_TINY) / levels(bits)).to(torch.bfloat16)


def column_scales(scales: torch.Tensor, group_size: int | None, in_features: int) -> torch.Tensor:
    """``(out, groups)`` bf16 scales -> ``(out, in)`` fp32, each column's scale (the last group cut short)."""
    size = in_features if group_size is None else group_size
    return scales.float().repeat_interleave(size, dim=1)[:, :in_features]


class _RoundClampSTE(torch.autograd.Function):
    """``clamp(round(x), -limit, limit)`` forward (bit for bit); backward, the straight-through estimator:
    the gradient passes wherever ``x`` rounds onto the grid (``|x| <= limit + 1/2``) and is 0 where it clips."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, limit: int) -> torch.Tensor:
        ctx.save_for_backward(x.abs() <= limit + 0.5)
        return torch.round(x).clamp(-limit, limit)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (inside,) = ctx.saved_tensors
        return grad * inside, None


def quantize_codes(weight: torch.Tensor, bits: int, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """``q = clamp(round(w / s), -levels, levels)``: ``(out, in)`` float codes (differentiable, STE) and
    the ``(out, groups)`` bf16 scales ``s``."""
    scales = group_scales(weight, bits, group_size)
    per_column = column_scales(scales, group_size, weight.shape[1])  # (out, in)
    return _RoundClampSTE.apply(weight.float() / per_column, levels(bits)), scales


def fake_quantize(weight: torch.Tensor, bits: int, group_size: int | None) -> torch.Tensor:
    """``(out, in)`` weights -> the ``(out, in)`` fp32 weights the artifact dequantizes to, bit for bit.

    Symmetric: ``s = absmax / (2**(bits-1) - 1)`` per row or group (bf16), ``w_hat = clamp(round(w / s),
    -levels, levels) * s``. Straight-through: ``d w_hat / d w`` is 1 (rounding passes the gradient, the
    scale is a constant, and absmax scales clip nothing beyond half a step), so training through it sees
    the quantized forward and an fp32 backward.

    >>> w = torch.tensor([[0.7, -1.4, 0.0, 0.35, 0.07]], requires_grad=True)
    >>> fake_quantize(w, bits=2, group_size=None)
    tensor([[ 1.3984, -1.3984,  0.0000,  0.0000,  0.0000]], grad_fn=<MulBackward0>)
    >>> fake_quantize(w, bits=4, group_size=2).sum().backward(); w.grad
    tensor([[1., 1., 1., 1., 1.]])
    """
    codes, scales = quantize_codes(weight, bits, group_size)
    return codes * column_scales(scales, group_size, weight.shape[1])


def dequantize(codes: torch.Tensor, scales: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """Integer ``(out, in)`` codes and ``(out, groups)`` bf16 scales -> ``(out, in)`` fp32 weights."""
    return codes.float() * column_scales(scales, group_size, codes.shape[1])


def relative_error_bound(bits: int) -> float:
    """The ``max_relative_error`` of a ``bits``-bit method (any group size), derived from its rounding.

    Rounding to a step ``s`` errs uniformly in ``[-s/2, s/2]``: RMS ``s / sqrt(12)``. For a row of
    weights spread uniformly in ``[-a, a]`` (``nn.Linear``'s initialisation; trained rows have heavier
    tails, which groups then help), ``s = a / levels`` and the row's RMS is ``a / sqrt(3)``, so each
    output is off by ``(s / sqrt(12)) / (a / sqrt(3)) = 1 / (2 * levels)`` of its own RMS, whatever
    the width. Groups do not help uniform weights: a group's absmax is ~``a`` too. Over up to three
    layers the errors add in quadrature (``sqrt(3)``); the largest of ~100 logit errors is up to ~3x
    their RMS while the largest logit is ~2.5x its RMS (``1.2``); a further 2x covers one small net's
    draw. Hence ``sqrt(3) * 1.2 * 2 / (2 * levels)`` ~ ``2.1 / levels``. Checked, not tuned: over 200
    random draws of each of the generic test's two nets, every width and group size (None, 16, 32, 128),
    the worst draw reaches 0.58-0.69 of it. A 2-bit grid (codes -1, 0, 1) errs by 50 % RMS per layer on
    random weights, so its bound, 2.1, is no promise of usefulness: it says what the arithmetic gives.

    >>> [round(relative_error_bound(b), 2) for b in (2, 3, 4, 8)]
    [2.08, 0.69, 0.3, 0.02]
    """
    return math.sqrt(3) * (3 / 2.5) * 2 / (2 * levels(bits))


class IntNWeightLinear(nn.Module):
    """Linear layer whose weights were stored as packed ``bits``-bit integers, dequantized once, at load.

    Measured on the text MLP 5000-512-256-128-64-2, int4 in groups of 32 (1 thread, batch 1 / 256,
    2-core AVX2 EPYC): unpacking and dequantizing at every call, 43 / 99 ms; unpacking to int8 at load
    and dequantizing per call (as ``weight_only_int8``), 2.6-3.6 / 27 ms; dequantizing once, at load,
    0.52 / 24 ms, fp32's own 0.51 / 26 ms. Eager PyTorch has no CPU kernel for packed sub-8-bit
    weights, so per-call work buys memory only. The weights are dequantized once and cached: the
    artifact on disk is ~``bits/32`` of fp32, the module in memory is fp32-sized and runs at fp32 speed.

    Args:
        weight: ``(out, in)`` fp32 dequantized weights (:func:`dequantize`).
        bias: ``(out,)`` fp32 bias, or ``None``.
        bits: The stored width (for ``repr``).
        group_size: Input columns per scale, ``None`` for one per output channel (for ``repr``).
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int, group_size: int | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)
        self.bits, self.group_size = bits, group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)  # (B, in) -> (B, out)

    def extra_repr(self) -> str:
        out_features, in_features = self.weight.shape
        return f"in_features={in_features}, out_features={out_features}, bits={self.bits}, group_size={self.group_size}"


def intn_codec(bits: int) -> LinearCodec:
    """The codec of the ``bits``-bit method: stores ``packed`` (uint8), ``scale`` (bf16) and ``bias`` (fp32)."""

    def encode(linear: nn.Linear, settings: Any) -> Encoded:
        codes, scales = quantize_codes(linear.weight.detach(), bits, settings.group_size)
        tensors = {"packed": pack(codes.to(torch.int8), bits), "scale": scales}
        if linear.bias is not None:
            tensors["bias"] = linear.bias.detach().float().clone()
        return tensors, {"bits": bits, "group_size": settings.group_size}, {}

    def decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
        shape = (spec["out_features"], spec["in_features"])
        codes = unpack(tensors["packed"], spec["bits"], shape[0] * shape[1]).view(shape)
        weight = dequantize(codes, tensors["scale"], spec["group_size"])
        return IntNWeightLinear(weight, tensors.get("bias"), spec["bits"], spec["group_size"])

    return LinearCodec(encode, decode)
