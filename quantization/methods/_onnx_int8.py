"""The weight choices of the ONNX int8 methods, and what they mean on each x86 CPU."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import onnx
from onnxruntime.quantization import QuantType

from quantization.artifacts.int8_overflow import integer_matmuls, worst_pair_sum
from quantization.artifacts.onnx_runtime import LINEAR_OPS, quantizer_advice_dropped

WeightType = Literal["int7", "uint8", "int8"]
# weights -> (ONNX Runtime weight type, reduce_range). Activations are always uint8.
WEIGHT_TYPES: dict[str, tuple[QuantType, bool]] = {
    "int7": (QuantType.QInt8, True),  # u8 x s7: the largest int16 pair sum is 255*64*2 = 32640: never saturates
    "uint8": (QuantType.QUInt8, False),  # u8 x u8 kernels widen to int16 first: exact
    "int8": (QuantType.QInt8, False),  # u8 x s8: vpmaddubsw saturates on AVX2 without VNNI
}
# As in every method, only nn.Linear layers are quantized; the rest (residual adds, norms, GELU's
# arithmetic, embeddings) runs in fp32 as written. A Relu or Clip that follows a quantized layer is
# folded into its output range at no cost (and left fp32 after a kept one). On a Linear/ReLU stack
# the artifact is byte for byte ONNX Runtime's default.
QUANTIZED_OPS = [*LINEAR_OPS, "Relu", "Clip"]


@dataclass(frozen=True)
class OnnxInt8Settings:
    """Args:
    weights: ``int7`` (default): int8 values in [-64, 64], exact on every x86 CPU. ``uint8``: u8 x u8
        kernels, exact everywhere, slower at large batches. ``int8``: the full range, exact only with
        VNNI/AMX (int16 pair sums saturate on AVX2 without VNNI; the report flags it).
    per_channel: One weight scale per output channel (recovers the precision of 7-bit weights).
    """

    weights: WeightType = "int7"
    per_channel: bool = True

    def __post_init__(self) -> None:
        if self.weights not in WEIGHT_TYPES:
            raise ValueError(f"Expected `weights` in ({', '.join(WEIGHT_TYPES)}), got {self.weights!r}.")

    @property
    def ort_weights(self) -> dict[str, object]:
        """``quantize_dynamic`` / ``quantize_static`` keyword arguments for these weights."""
        weight_type, reduce_range = WEIGHT_TYPES[self.weights]
        return {"weight_type": weight_type, "reduce_range": reduce_range, "per_channel": self.per_channel}


def ort_scope(keep_nodes: list[str]) -> dict[str, object]:
    """``quantize_dynamic`` / ``quantize_static`` keyword arguments: quantize the Linear layers
    (:data:`QUANTIZED_OPS`) but the nodes of the kept ones.

    ``quantize_dynamic`` rewrites each ``Gemm`` ``n`` as ``MatMul`` ``n_MatMul`` (+ ``Add``) before it
    excludes nodes by name, so both names are excluded.
    """
    return {
        "op_types_to_quantize": QUANTIZED_OPS,
        "nodes_to_exclude": [*keep_nodes, *(f"{n}_MatMul" for n in keep_nodes)],
    }


def quantize_onnx_file(fp32: bytes, quantize: Callable[[Path, Path], None]) -> tuple[bytes, dict[str, float]]:
    """Run an ONNX Runtime quantizer ``quantize(source_path, target_path)`` on ``fp32`` model bytes.

    Returns the quantized model's bytes and :func:`int16_overflow_info` about them.
    """
    with tempfile.TemporaryDirectory() as tmp, quantizer_advice_dropped():
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(fp32)
        quantize(source, target)
        quantized = target.read_bytes()
    return quantized, int16_overflow_info(quantized)


def int16_overflow_info(data: bytes) -> dict[str, float]:
    """``avx2_worst_pair_sum``: the largest int16 pair sum u8 activations can reach with the s8 weights.

    Above 32767 the artifact can saturate on AVX2 CPUs without VNNI (see ``quantization.artifacts.int8_overflow``).
    """
    matmuls = integer_matmuls(onnx.load_from_string(data))
    worst = max((worst_pair_sum(m.weight) for m in matmuls if m.weight.dtype == np.int8), default=0)
    return {"avx2_worst_pair_sum": worst}
