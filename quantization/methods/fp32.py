"""``fp32``: the baseline every method is compared with; its artifact is the model's own weights."""

from __future__ import annotations

from dataclasses import dataclass

from quantization.artifacts.torch_artifact import FP32_CODEC, torch_method
from quantization.registry import register


@dataclass(frozen=True)
class Fp32Settings:
    """No settings: the weights as trained."""


METHOD = register(
    torch_method(
        "fp32",
        Fp32Settings,
        FP32_CODEC,
        summary="the trained fp32 weights (baseline)",
        max_relative_error=0.0,  # the weights as they are
    )
)
