"""The 2-8 bit weight-only family: symmetric integer weights, one bf16 scale per output channel or per
group of input columns, packed densely (``_packing``), dequantized once when the artifact loads.

Three scale rules: ``absmax`` (the largest weight lands on the top code, nothing clips), ``mse`` (the
clipping ratio of absmax, searched per row or group, that minimizes the squared rounding error: at 2-3
bits clipping a few outliers buys a finer step for all the others) and ``fixed`` (the seed's rule, one
step ``2**-fixed_exponent`` for every layer, nothing learned from the weights).

:func:`fake_quantize` is the whole arithmetic, as a pure differentiable function: the artifact's
dequantized weights equal it bit for bit, and quantization-aware training reuses it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
from torch import nn
from torch.nn import functional as F

from quantization.artifacts.torch_artifact import Encoded, LinearCodec
from quantization.methods._packing import pack, unpack

MIN_GROUP_SIZE = 8  # bf16 scales cost 16/group_size bits per weight: 2 at 8, more below
_TINY = 1e-12  # an all-zero row or group still gets a usable (positive) scale
# Clipping ratios of absmax tried by the ``mse`` rule, absmax first (kept on ties). Below 0.3 even
# 2-bit rows lose more to clipping than they win: the MSE optimum of trained MNIST and tweets rows
# lies in 0.45-0.95.
MSE_RATIOS = tuple(1.0 - 0.05 * i for i in range(15))  # 1.0, 0.95, ..., 0.3
ScaleRule = Literal["absmax", "mse", "fixed"]


@dataclass(frozen=True)
class IntNSettings:
    """Settings every method of the family shares (each method's file sets its own defaults).

    Args:
        group_size: Input columns per scale (the last group of a row takes what is left); ``None``: one
            scale per output channel.
        scale: ``absmax`` (nothing clips), ``mse`` (clipping searched per row/group for the least
            squared error) or ``fixed`` (the step ``2**-fixed_exponent`` everywhere, as the seed's int8).
        fixed_exponent: The ``fixed`` rule's step is ``2**-fixed_exponent``; weights past
            ``levels * step`` saturate (the report gives the share).
    """

    METHOD: ClassVar[str] = "intn_weight_only"
    group_size: int | None = 32
    scale: ScaleRule = "absmax"
    fixed_exponent: int = 7

    def __post_init__(self) -> None:
        check_group_size(self.METHOD, self.group_size)
        if self.scale not in ("absmax", "mse", "fixed"):
            raise ValueError(f"Expected `settings.{self.METHOD}.scale` in (absmax, mse, fixed), got {self.scale!r}.")
        if isinstance(self.fixed_exponent, bool) or not isinstance(self.fixed_exponent, int):
            raise ValueError(
                f"Expected `settings.{self.METHOD}.fixed_exponent` an integer, got {self.fixed_exponent!r}."
            )
        if not 0 <= self.fixed_exponent <= 14:
            raise ValueError(f"Expected `settings.{self.METHOD}.fixed_exponent` in [0, 14], got {self.fixed_exponent}.")


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


def grouped(weight: torch.Tensor, group_size: int | None) -> torch.Tensor:
    """``(out, in)`` -> ``(out, groups, size)`` detached fp32, the last group padded with zeros."""
    out_features, in_features = weight.shape
    size = in_features if group_size is None else group_size
    groups = math.ceil(in_features / size)
    return F.pad(weight.detach().float(), (0, groups * size - in_features)).view(out_features, groups, size)


def group_scales(
    weight: torch.Tensor, bits: int, group_size: int | None, scale: ScaleRule = "absmax", fixed_exponent: int = 7
) -> torch.Tensor:
    """One scale per row (``group_size=None``) or per ``group_size`` input columns, by ``scale`` rule.

    ``absmax``: ``absmax / levels(bits)``; ``mse``: :func:`mse_scales`; ``fixed``: ``2**-fixed_exponent``.

    ``(out, in) -> (out, ceil(in / group_size))``, rounded to bf16: what the artifact stores (fp32's
    range, 8 significant bits; a 0.2 % scale error is nothing next to a 1/14 rounding step). The last
    group of a row whose ``in`` is not a multiple of ``group_size`` holds the remaining columns only:
    it is padded with zeros, which never raise an absmax. Computed from ``weight.detach()``: a constant
    for autograd.

    >>> group_scales(torch.tensor([[0.7, -1.4, 0.0, 0.35, 0.07]]), bits=4, group_size=2)
    tensor([[0.2002, 0.0500, 0.0100]], dtype=torch.bfloat16)
    >>> group_scales(torch.tensor([[0.7, -1.4, 0.0, 0.35, 0.07]]), bits=4, group_size=2, scale="fixed")
    tensor([[0.0078, 0.0078, 0.0078]], dtype=torch.bfloat16)
    """
    blocks = grouped(weight, group_size)  # (out, groups, size)
    if scale == "fixed":
        return torch.full(blocks.shape[:2], 2.0**-fixed_exponent, dtype=torch.bfloat16)
    absmax = (blocks.abs().amax(dim=2).clamp_min(_TINY) / levels(bits)).to(torch.bfloat16)  # (out, groups)
    return mse_scales(blocks, absmax, bits) if scale == "mse" else absmax


def mse_scales(blocks: torch.Tensor, absmax: torch.Tensor, bits: int) -> torch.Tensor:
    """Per row/group, the scale ``ratio * absmax`` (ratios :data:`MSE_RATIOS`, rounded to bf16) whose
    rounding leaves the least squared error; ``(out, groups, size)`` blocks, ``(out, groups)`` bf16 scales.

    Deterministic (same weights, same scales), so the artifact and quantization-aware training agree.

    >>> w = torch.tensor([[1.0, 0.5, -0.5, 0.4, 0.45, -0.5, 0.55, 0.5]])
    >>> group_scales(w, bits=2, group_size=None, scale="absmax")  # every weight but 1.0 rounds to 0
    tensor([[1.]], dtype=torch.bfloat16)
    >>> group_scales(w, bits=2, group_size=None, scale="mse")  # 1.0 clips; the seven others land on +-1
    tensor([[0.5508]], dtype=torch.bfloat16)
    """
    limit = levels(bits)
    best, best_error = absmax, None
    for ratio in MSE_RATIOS:
        candidate = (absmax.float() * ratio).to(torch.bfloat16)  # (out, groups)
        step = candidate.float().unsqueeze(2)  # (out, groups, 1)
        error = (torch.round(blocks / step).clamp(-limit, limit) * step - blocks).square().sum(dim=2)
        if best_error is None:
            best_error = error
            continue
        better = error < best_error
        best, best_error = torch.where(better, candidate, best), torch.where(better, error, best_error)
    return best


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


def quantize_codes(
    weight: torch.Tensor, bits: int, group_size: int | None, scale: ScaleRule = "absmax", fixed_exponent: int = 7
) -> tuple[torch.Tensor, torch.Tensor]:
    """``q = clamp(round(w / s), -levels, levels)``: ``(out, in)`` float codes (differentiable, STE) and
    the ``(out, groups)`` bf16 scales ``s``."""
    scales = group_scales(weight, bits, group_size, scale, fixed_exponent)
    per_column = column_scales(scales, group_size, weight.shape[1])  # (out, in)
    return _RoundClampSTE.apply(weight.float() / per_column, levels(bits)), scales


def fake_quantize(
    weight: torch.Tensor, bits: int, group_size: int | None, scale: ScaleRule = "absmax", fixed_exponent: int = 7
) -> torch.Tensor:
    """``(out, in)`` weights -> the ``(out, in)`` fp32 weights the artifact dequantizes to, bit for bit.

    Symmetric: ``s = absmax / (2**(bits-1) - 1)`` per row or group (bf16; or the ``mse``/``fixed`` rule's
    scale), ``w_hat = clamp(round(w / s), -levels, levels) * s``. Straight-through: ``d w_hat / d w`` is 1
    where ``w`` lands on the grid (rounding passes the gradient, the scale is a constant) and 0 where it
    clips (absmax scales clip nothing), so training through it sees the quantized forward and an fp32
    backward.

    >>> w = torch.tensor([[0.7, -1.4, 0.0, 0.35, 0.07]], requires_grad=True)
    >>> fake_quantize(w, bits=2, group_size=None)
    tensor([[ 1.3984, -1.3984,  0.0000,  0.0000,  0.0000]], grad_fn=<MulBackward0>)
    >>> fake_quantize(w, bits=4, group_size=2).sum().backward(); w.grad
    tensor([[1., 1., 1., 1., 1.]])
    """
    codes, scales = quantize_codes(weight, bits, group_size, scale, fixed_exponent)
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


def settings_bits(bits: int | None, settings: Any) -> int:
    """The method's fixed width, or ``settings.bits`` for the method whose width is a setting."""
    return settings.bits if bits is None else bits


def intn_fake_quantizer(bits: int | None) -> Callable[[torch.Tensor, Any], torch.Tensor]:
    """``(weight, settings) -> fake-quantized weight`` of the ``bits``-bit method (``None``: ``settings.bits``):
    what quantization-aware training trains through, equal bit for bit to the artifact's weights."""

    def fake(weight: torch.Tensor, settings: Any) -> torch.Tensor:
        width = settings_bits(bits, settings)
        return fake_quantize(weight, width, settings.group_size, settings.scale, settings.fixed_exponent)

    return fake


def intn_codec(bits: int | None) -> LinearCodec:
    """The codec of the ``bits``-bit method (``None``: ``settings.bits``): stores ``packed`` (uint8),
    ``scale`` (bf16) and ``bias`` (fp32); counts the weights a ``fixed`` scale saturated."""

    def encode(linear: nn.Linear, settings: Any) -> Encoded:
        width = settings_bits(bits, settings)
        weight = linear.weight.detach()
        codes, scales = quantize_codes(weight, width, settings.group_size, settings.scale, settings.fixed_exponent)
        per_column = column_scales(scales, settings.group_size, weight.shape[1])
        saturated = int((weight.float().abs() / per_column > levels(width) + 0.5).sum())
        tensors = {"packed": pack(codes.to(torch.int8), width), "scale": scales}
        if linear.bias is not None:
            tensors["bias"] = linear.bias.detach().float().clone()
        spec = {"bits": width, "group_size": settings.group_size, "scale": settings.scale}
        return tensors, spec, {"saturated": saturated, "quantized": weight.numel()}

    def decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
        shape = (spec["out_features"], spec["in_features"])
        codes = unpack(tensors["packed"], spec["bits"], shape[0] * shape[1]).view(shape)
        weight = dequantize(codes, tensors["scale"], spec["group_size"])
        return IntNWeightLinear(weight, tensors.get("bias"), spec["bits"], spec["group_size"])

    return LinearCodec(encode, decode, fp32_weight=True)
