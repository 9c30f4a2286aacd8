"""``bf16``: every Linear layer in bfloat16 (fp32's range, 8 significant bits); fast on CPUs with AVX-512 BF16/AMX."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from quantization.artifacts.torch_artifact import torch_method
from quantization.methods._casts import cast_codec
from quantization.registry import register


@dataclass(frozen=True)
class Bf16Settings:
    """No settings: a cast."""


METHOD = register(
    torch_method(
        "bf16",
        Bf16Settings,
        cast_codec(torch.bfloat16),
        summary="Linear weights cast to bfloat16 (2x smaller)",
        max_relative_error=0.03,  # 8 significant bits: ~0.4 % per operation, summed over two layers
    )
)
