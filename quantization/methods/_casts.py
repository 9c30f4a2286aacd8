"""Half-precision casts shared by ``fp16`` and ``bf16``: the layer keeps its weights in ``dtype``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from quantization.artifacts.torch_artifact import Encoded, LinearCodec


class CastLinear(nn.Module):
    """A Linear layer whose weights are stored and multiplied in ``weight.dtype``; in and out in the caller's dtype."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, in) -> (B, out), in the caller's dtype: no cast at all inside a stack that runs in half precision
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias).to(x.dtype)


def cast_codec(dtype: torch.dtype) -> LinearCodec:
    """Store weight and bias in ``dtype``; rebuild a :class:`CastLinear`."""

    def encode(linear: nn.Linear, settings: Any) -> Encoded:
        tensors = {"weight": linear.weight.detach().to(dtype).clone()}
        if linear.bias is not None:
            tensors["bias"] = linear.bias.detach().to(dtype).clone()
        return tensors, {}, {}

    def decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
        return CastLinear(tensors["weight"], tensors.get("bias"))

    return LinearCodec(encode, decode, input_dtype=dtype)
