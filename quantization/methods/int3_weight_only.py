"""``int3_weight_only``: symmetric 3-bit weights packed 8 in 3 bytes, one bf16 scale per group of input columns.

Dequantized once, at load: the artifact is ~3.5/32 of fp32 (9.1x smaller on the text MLP). Default
groups of 32: on trained MNIST (``benchmarks/intn_weight.py``) they lose 0.25 points (92.39 %), as
groups of 16 do at a larger size; per channel loses 7 points.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from quantization.artifacts.torch_artifact import torch_method
from quantization.methods._intn_weight import IntNSettings, intn_codec, intn_fake_quantizer, relative_error_bound
from quantization.registry import register


@dataclass(frozen=True)
class Int3WeightOnlySettings(IntNSettings):
    """The family's settings (``_intn_weight.IntNSettings``: ``group_size``, ``scale``, ``fixed_exponent``)."""

    METHOD: ClassVar[str] = "int3_weight_only"
    group_size: int | None = 32


METHOD = register(
    torch_method(
        "int3_weight_only",
        Int3WeightOnlySettings,
        intn_codec(bits=3),
        fake_quantize=intn_fake_quantizer(bits=3),
        summary="3-bit weights packed 8 in 3 bytes, bf16 scales per 32 inputs; dequantized at load",
        max_relative_error=relative_error_bound(3),  # 0.69: step absmax/3, 1/6 RMS error per layer (derived there)
    )
)
