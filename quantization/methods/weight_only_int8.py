"""``weight_only_int8``: symmetric int8 weights with one fp32 scale per output channel, dequantized per call.

The largest ``|w|`` of each row maps to 127, so nothing saturates. It buys size (4x), not speed:
eager PyTorch dequantizes at every call.
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
class WeightOnlyInt8Settings:
    """No settings: symmetric, per output channel."""


def _encode(linear: nn.Linear, settings: WeightOnlyInt8Settings) -> Encoded:
    weight = linear.weight.detach()
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (out, 1)
    tensors = {"weight": torch.round(weight / scale).clamp(-127, 127).to(torch.int8), "scale": scale.float()}
    if linear.bias is not None:
        tensors["bias"] = linear.bias.detach().float().clone()
    return tensors, {}, {}


def _decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    return Int8WeightLinear(tensors["weight"], tensors["scale"], tensors.get("bias"))


METHOD = register(
    torch_method(
        "weight_only_int8",
        WeightOnlyInt8Settings,
        LinearCodec(_encode, _decode),
        summary="int8 weights, one scale per output channel, dequantized per call",
        max_relative_error=0.03,  # int8 weights, step max/127 per row: ~0.5 % per layer
    )
)
