"""``fixed_scale_int8``: weights and biases times a fixed ``2**bits``, rounded and clamped to int8.

The seed's scheme: no per-layer scale, so values outside ``[-128, 127] / 2**bits`` saturate; the
report gives the share that did.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantization.artifacts.torch_artifact import Encoded, LinearCodec, torch_method
from quantization.methods._int8_weight import Int8WeightLinear
from quantization.registry import register


@dataclass(frozen=True)
class FixedScaleInt8Settings:
    """Args:
    bits: Values are stored as ``round(v * 2**bits)`` clamped to int8 (a grid of ``2**-bits``).
    """

    bits: int = 7

    def __post_init__(self) -> None:
        if not 0 <= self.bits <= 14:
            raise ValueError(f"Expected `settings.fixed_scale_int8.bits` in [0, 14], got {self.bits}.")


def _to_fixed_scale(values: torch.Tensor, bits: int) -> tuple[torch.Tensor, int]:
    scaled = torch.round(values.detach() * 2**bits)
    saturated = int(((scaled > 127) | (scaled < -128)).sum())
    return scaled.clamp(-128, 127).to(torch.int8), saturated


def _encode(linear: nn.Linear, settings: FixedScaleInt8Settings) -> Encoded:
    tensors, saturated = {}, 0
    for name, param in (("weight", linear.weight), ("bias", linear.bias)):
        if param is not None:
            tensors[name], count = _to_fixed_scale(param, settings.bits)
            saturated += count
    total = sum(t.numel() for t in tensors.values())
    return tensors, {"bits": settings.bits}, {"saturated": saturated, "quantized": total}


def _decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    step = 2.0 ** -spec["bits"]
    bias = tensors["bias"].float() * step if "bias" in tensors else None
    return Int8WeightLinear(tensors["weight"], torch.tensor(step), bias)


METHOD = register(
    torch_method(
        "fixed_scale_int8",
        FixedScaleInt8Settings,
        LinearCodec(_encode, _decode),
        summary="weights and biases on a fixed 2^-bits grid in int8 (the seed's scheme)",
        max_relative_error=0.15,  # a fixed 1/128 grid whatever the weights' range: weights of ~0.1 keep ~3.5 bits
    )
)
