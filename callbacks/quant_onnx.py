"""ONNX Runtime quantization methods: export the plain net to ONNX, quantize it with ONNX Runtime.

The artifact is the ``.onnx`` file itself; it is measured with an ``InferenceSession`` whose
intra-op thread count is fixed, like torch's.
"""

from __future__ import annotations

import copy
import io
import logging
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic, quantize_static
from torch import nn

from callbacks.quant_torch import QuantOptions, plain_layers
from quantization.int8_overflow import integer_matmuls, worst_pair_sum

INPUT_NAME, OUTPUT_NAME = "x", "logits"
# `onnx_weights` -> (ONNX Runtime weight type, reduce_range). Activations are always uint8.
WEIGHT_TYPES = {
    "int7": (QuantType.QInt8, True),  # u8 x s7: the largest int16 pair sum is 255*64*2 = 32640, never saturates
    "uint8": (QuantType.QUInt8, False),  # u8 x u8 kernels widen to int16 first: exact
    "int8": (QuantType.QInt8, False),  # u8 x s8: vpmaddubsw saturates on AVX2 without VNNI
}


def export_onnx(net: nn.Module, opset: int = 17) -> bytes:
    """``net`` as an fp32 ONNX graph with a dynamic batch dimension, ``(B, input_dim) -> (B, num_classes)``."""
    input_dim = next(layer for layer in plain_layers(net) if isinstance(layer, nn.Linear)).in_features
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo=True, which needs onnxscript
        # (not a dependency); it still exports these plain Linear/activation graphs exactly.
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            copy.deepcopy(net).float().eval(),  # the caller's net is only read
            (torch.zeros(1, input_dim),),
            buffer,
            dynamo=False,
            opset_version=opset,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


class _BatchReader(CalibrationDataReader):
    """Feeds calibration batches to ``quantize_static`` one at a time."""

    def __init__(self, batches: list[torch.Tensor]) -> None:
        self._feeds = iter([{INPUT_NAME: _as_numpy(batch)} for batch in batches])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def onnx_dynamic_int8(net: nn.Module, options: QuantOptions) -> tuple[bytes, dict[str, float]]:
    """int8 weights, activations quantized per call (ONNX Runtime ``quantize_dynamic``)."""
    data = _quantize_onnx(net, options, static=False)
    return data, int16_overflow_info(data)


def onnx_static_int8(net: nn.Module, options: QuantOptions) -> tuple[bytes, dict[str, float]]:
    """int8 weights and activations, activation ranges calibrated on ``options.calibration``."""
    if not options.calibration:
        raise ValueError("Method `onnx_static_int8` needs calibration batches; got none (`calibration_batches` 0?).")
    data = _quantize_onnx(net, options, static=True)
    return data, int16_overflow_info(data)


def int16_overflow_info(data: bytes) -> dict[str, float]:
    """``avx2_worst_pair_sum``: the largest int16 pair sum u8 activations can reach with the s8 weights.

    Above 32767 the artifact can saturate on AVX2 CPUs without VNNI (see ``quantization.int8_overflow``).
    """
    matmuls = integer_matmuls(onnx.load_from_string(data))
    worst = max((worst_pair_sum(m.weight) for m in matmuls if m.weight.dtype == np.int8), default=0)
    return {"avx2_worst_pair_sum": worst}


def _quantize_onnx(net: nn.Module, options: QuantOptions, static: bool) -> bytes:
    if options.onnx_weights not in WEIGHT_TYPES:
        raise ValueError(
            f"Expected `onnx_weights` to be one of ({', '.join(WEIGHT_TYPES)}), got {options.onnx_weights!r}."
        )
    weight_type, reduce_range = WEIGHT_TYPES[options.onnx_weights]
    common = {"weight_type": weight_type, "reduce_range": reduce_range, "per_channel": options.onnx_per_channel}
    with tempfile.TemporaryDirectory() as tmp:
        source, target = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
        source.write_bytes(export_onnx(net, options.onnx_opset))
        with _ort_quantizer_quiet():
            if static:
                # QOperator (QGemm) graphs are smaller and a little faster on CPU than QDQ.
                quantize_static(
                    source,
                    target,
                    _BatchReader(options.calibration),
                    quant_format=QuantFormat.QOperator,
                    activation_type=QuantType.QUInt8,
                    **common,
                )
            else:
                quantize_dynamic(source, target, **common)
        return target.read_bytes()


@contextmanager
def _ort_quantizer_quiet() -> Iterator[None]:
    """The quantizer logs "consider pre-processing" through the root logger at every call.

    Shape pre-processing adds value_info records that make the small model's file bigger, so it is
    skipped on purpose and the advice is silenced for the duration of the call.
    """
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def _as_numpy(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().cpu().float().numpy())


class OrtRunner:
    """Runs an ONNX model in ONNX Runtime on CPU with ``num_threads`` intra-op threads.

    Args:
        model: The ``.onnx`` file's bytes.
        num_threads: Intra-op threads (inter-op is 1: the graph is a chain).
    """

    def __init__(self, model: bytes, num_threads: int = 1) -> None:
        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def prepare(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        return {self.input_name: _as_numpy(x)}

    def run(self, prepared: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, prepared)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits, ``(B, input_dim) -> (B, num_classes)``."""
        return torch.from_numpy(self.run(self.prepare(x))[0]).float()
