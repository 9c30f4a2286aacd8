"""The Linear layer of the weight-only methods: integer weights in memory, dequantized at each call."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class Int8WeightLinear(nn.Module):
    """Linear layer with int8 weights kept in memory and dequantized at every call.

    Args:
        weight: ``(out, in)`` int8 weights.
        scale: ``(out, 1)`` fp32 scales, one per output channel (or one for all).
        bias: ``(out,)`` fp32 bias, or ``None``.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype) * self.scale, self.bias)  # (B, in) -> (B, out)
