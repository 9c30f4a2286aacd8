"""``int2_weight_only``: symmetric 2-bit weights (codes -1, 0, 1) packed four per byte, one bf16 scale per group.

Dequantized once, at load: the artifact is ~3/32 of fp32 (10.6x smaller on the text MLP). With absmax
scales two bits are coarse: on trained MNIST (``benchmarks/intn_weight.py``) groups of 16 give 82.97 %
(fp32 92.64), per channel 51 %. ``int3_weight_only`` per channel is as small and more accurate (85.5 %):
pick int2 to go below 3 bits per weight (``group_size`` 32, 128 or null), knowing the cost.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from quantization.artifacts.torch_artifact import torch_method
from quantization.methods._intn_weight import IntNSettings, intn_codec, intn_fake_quantizer, relative_error_bound
from quantization.registry import register


@dataclass(frozen=True)
class Int2WeightOnlySettings(IntNSettings):
    """The family's settings (``_intn_weight.IntNSettings``: ``group_size``, ``scale``, ``fixed_exponent``)."""

    METHOD: ClassVar[str] = "int2_weight_only"
    group_size: int | None = 16


METHOD = register(
    torch_method(
        "int2_weight_only",
        Int2WeightOnlySettings,
        intn_codec(bits=2),
        fake_quantize=intn_fake_quantizer(bits=2),
        summary="2-bit weights packed four per byte, bf16 scales per 16 inputs; dequantized at load",
        max_relative_error=relative_error_bound(2),  # 2.1: codes -1, 0, 1 err 50 % RMS per layer on random weights
    )
)
