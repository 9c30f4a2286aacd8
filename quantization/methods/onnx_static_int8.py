"""``onnx_static_int8``: ONNX Runtime ``quantize_static``: int8 weights and activations, ranges calibrated.

Activation ranges come from ``calibration_batches`` training batches; the graph is QOperator
(``QGemm``), smaller and a little faster on CPU than QDQ. Only the Linear layers are quantized (a ReLU
after one is folded into its range); residual adds, norms and GELU run in fp32, as in every method.
Weights are 7-bit by default so the artifact is exact on every x86 CPU (see ``_onnx_int8``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_static

from quantization.artifacts.onnx_runtime import INPUT_NAME, as_numpy, onnx_method
from quantization.methods._onnx_int8 import OnnxInt8Settings, ort_scope, quantize_onnx_file
from quantization.registry import QuantizationData, register

# `calibration` -> how ONNX Runtime turns the calibration activations into each tensor's range.
CALIBRATIONS = {
    "minmax": CalibrationMethod.MinMax,  # the observed min and max: nothing clips on data like the calibration's
    "percentile": CalibrationMethod.Percentile,  # the 99.999th percentile of |x|: rare outliers clip, the rest is finer
    "entropy": CalibrationMethod.Entropy,  # the range whose histogram keeps most information (KL divergence)
}


@dataclass(frozen=True)
class OnnxStaticInt8Settings(OnnxInt8Settings):
    """Args:
    weights: As ``onnx_dynamic_int8``: ``int7`` (default, exact on every x86 CPU), ``uint8`` or ``int8``.
    per_channel: One weight scale per output channel (recovers the precision of 7-bit weights).
    calibration: How activation ranges are chosen from the calibration batches: ``minmax`` (default;
        nothing clips on data like the calibration's), ``percentile`` (clips rare outliers for a finer
        step) or ``entropy`` (the range that keeps most of the histogram's information).
    """

    calibration: Literal["minmax", "percentile", "entropy"] = "minmax"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"Expected `calibration` in ({', '.join(CALIBRATIONS)}), got {self.calibration!r}.")


class _BatchReader(CalibrationDataReader):
    """Feeds calibration batches to ``quantize_static`` one at a time, each made dense only when it is read."""

    def __init__(self, batches) -> None:
        self._feeds = ({INPUT_NAME: as_numpy(batch)} for batch in batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def _convert(
    fp32: bytes, settings: OnnxStaticInt8Settings, data: QuantizationData, keep_nodes: list[str]
) -> tuple[bytes, dict]:
    def quantize(source: Path, target: Path) -> None:
        quantize_static(
            source,
            target,
            _BatchReader(data.calibration),
            quant_format=QuantFormat.QOperator,
            activation_type=QuantType.QUInt8,
            calibrate_method=CALIBRATIONS[settings.calibration],
            **settings.ort_weights,
            **ort_scope(keep_nodes),
        )

    return quantize_onnx_file(fp32, quantize)


METHOD = register(
    onnx_method(
        "onnx_static_int8",
        OnnxStaticInt8Settings,
        _convert,
        summary="ONNX Runtime quantize_static: int8 weights and activations, calibrated ranges",
        max_relative_error=0.08,  # as dynamic, but activation ranges are calibrated, so unseen inputs can clip
        needs_calibration=True,
    )
)
