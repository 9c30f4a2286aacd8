"""``intn_weight_only``: the 2-8 bit weight-only family at any width, with any of its scale rules.

``int2/int3/int4_weight_only`` are its presets and run in every report; this one runs when named, for
the widths between (5-7 bits) or the seed's fixed-scale scheme below 8 bits: e.g.
``settings: {intn_weight_only: {bits: 6, scale: fixed, fixed_exponent: 5}}``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

from quantization.artifacts.torch_artifact import torch_method
from quantization.methods._intn_weight import IntNSettings, intn_codec, intn_fake_quantizer, relative_error_bound
from quantization.registry import register


@dataclass(frozen=True)
class IntNWeightOnlySettings(IntNSettings):
    """The family's settings (``group_size``, ``scale``, ``fixed_exponent``) and the width.

    Args:
        bits: Bits per weight, 2 to 8 (codes ``-(2**(bits-1) - 1) .. 2**(bits-1) - 1``).
    """

    METHOD: ClassVar[str] = "intn_weight_only"
    bits: int = 6

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.bits, bool) or not isinstance(self.bits, int) or not 2 <= self.bits <= 8:
            raise ValueError(f"Expected `settings.intn_weight_only.bits` an integer in [2, 8], got {self.bits!r}.")


METHOD = register(
    dataclasses.replace(
        torch_method(
            "intn_weight_only",
            IntNWeightOnlySettings,
            intn_codec(bits=None),
            fake_quantize=intn_fake_quantizer(bits=None),
            summary="2-8 bit weights packed densely, bf16 scales (absmax, mse or fixed); dequantized at load",
            # The default width's bound; the generic tests run the defaults (6 bits: 0.07).
            max_relative_error=relative_error_bound(IntNWeightOnlySettings.bits),
        ),
        in_default_sweep=False,  # its presets cover the sweep; named when a width or rule is wanted
    )
)
