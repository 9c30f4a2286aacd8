"""``fp32``: the baseline every method is compared with; its artifact is the model's own weights."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantization.registry import register
from quantization.torch_artifact import Encoded, LinearCodec, torch_method


@dataclass(frozen=True)
class Fp32Settings:
    """No settings: the weights as trained."""


def _encode(linear: nn.Linear, settings: Fp32Settings) -> Encoded:
    tensors = {"weight": linear.weight.detach().float().clone()}
    if linear.bias is not None:
        tensors["bias"] = linear.bias.detach().float().clone()
    return tensors, {}, {}


def _decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    layer = nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    layer.load_state_dict(tensors)
    return layer


METHOD = register(
    torch_method(
        "fp32",
        Fp32Settings,
        LinearCodec(_encode, _decode),
        summary="the trained fp32 weights (baseline)",
        max_relative_error=0.0,  # the weights as they are
    )
)
