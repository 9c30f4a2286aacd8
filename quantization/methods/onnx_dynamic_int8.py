"""``onnx_dynamic_int8``: ONNX Runtime ``quantize_dynamic``: int8 weights, activations quantized per call.

The fastest choice at batch 1 on most CPUs, with no calibration data. Its weights are 7-bit by
default so the artifact is exact on every x86 CPU (see ``_onnx_int8``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from onnxruntime.quantization import quantize_dynamic

from quantization.artifacts.onnx_runtime import onnx_method
from quantization.methods._onnx_int8 import OnnxInt8Settings, ort_scope, quantize_onnx_file
from quantization.registry import QuantizationData, register


@dataclass(frozen=True)
class OnnxDynamicInt8Settings(OnnxInt8Settings):
    __doc__ = OnnxInt8Settings.__doc__


def _convert(
    fp32: bytes, settings: OnnxDynamicInt8Settings, data: QuantizationData, keep_nodes: list[str]
) -> tuple[bytes, dict]:
    def quantize(source: Path, target: Path) -> None:
        quantize_dynamic(source, target, **settings.ort_weights, **ort_scope(keep_nodes))

    return quantize_onnx_file(fp32, quantize)


METHOD = register(
    replace(
        onnx_method(
            "onnx_dynamic_int8",
            OnnxDynamicInt8Settings,
            _convert,
            summary="ONNX Runtime quantize_dynamic: int8 weights, activations quantized per call",
            max_relative_error=0.05,  # 7-bit weights (step max/64) and 8-bit activations (range/255): ~1 % per layer
        ),
        activations_per_call=True,
    )
)
