"""``fp16``: weights and activations of every Linear layer in IEEE half precision (11 significant bits)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quantization.artifacts.torch_artifact import torch_method
from quantization.methods._casts import cast_codec
from quantization.registry import register


@dataclass(frozen=True)
class Fp16Settings:
    """No settings: a cast."""


METHOD = register(
    torch_method(
        "fp16",
        Fp16Settings,
        cast_codec(torch.float16),
        summary="Linear weights cast to float16 (2x smaller)",
        max_relative_error=0.005,  # 11 significant bits: ~0.05 % per operation
    )
)
