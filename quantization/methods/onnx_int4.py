"""``onnx_int4``: ONNX Runtime 4-bit weight-only quantization (``MatMulNBits``, round to nearest), run by ONNX Runtime.

Each ``nn.Linear`` weight is cut along its inputs into blocks of ``block_size`` values, each block
stored as 4-bit integers with one fp32 scale: ``4 + 32 / block_size`` bits a weight, about 6.4x
smaller than fp32 at block 32 and 7.5x at block 128. Everything that is not a Linear weight (biases,
norms, residuals) stays fp32. ONNX Runtime's quantizer rewrites ``MatMul`` nodes only, so each
Linear's ``Gemm`` is rewritten as ``MatMul + Add`` first (``_onnx_matmul``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import onnx

from quantization.artifacts.onnx_runtime import onnx_method
from quantization.methods._onnx_matmul import LinearGemm, gemms_to_matmuls, linear_gemms
from quantization.registry import QuantizationData, register

BLOCK_SIZES = (16, 32, 64, 128, 256)  # the block lengths ONNX Runtime's quantizer and kernels support
ACCURACY_LEVELS = (0, 1, 2, 3, 4)
_FP32_BYTES = 4


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)  # 4.0 or True would reach ONNX as the wrong type


@dataclass(frozen=True)
class OnnxInt4Settings:
    """Args:
    block_size: Weights per scale, along a layer's inputs: 16, 32, 64, 128 or 256. Smaller blocks follow
        the weights' range more closely and spend more scales (32 bits per block): 5 bits a weight at 32,
        4.25 at 128. Default 128: measured here it is 7.3x smaller than fp32 on the text MLP (32: 6.4x) and
        1.4-1.7x faster than 32, with no accuracy cost on the trained models (tweets MLP and MNIST within
        0.1 point of fp32 at every block size; MNIST agreement with fp32 99.0 % at 128, 99.4 % at 32).
        A layer's inputs are padded with zeros to whole blocks; where its padded 4-bit blocks would not be
        smaller than its fp32 weights (fewer inputs than about ``block_size / 8``) it stays fp32, and the
        artifact's ``int4_weight_fraction`` says so.
    symmetric: ``True``: codes -8..7 times the block's scale. ``False``: codes 0..15 and a 4-bit zero point
        per block, for blocks not centred on zero: 2.5 % larger, as fast, no more accurate on the models here.
    accuracy_level: How ONNX Runtime multiplies activations by the 4-bit weights on CPU. ``4``: each block of
        activations is quantized per call to int8 (one scale per block) and multiplied in integers with
        int32 sums: 3-5x faster at batch 1 than fp32 compute on the text MLP, though on a layer with few
        outputs (784 -> 10) at batch 256 quantizing the activations costs more than it saves. 4-bit
        weights times int8 activations cannot saturate AVX2's int16 pair sums (2 * 15 * 128 < 32767).
        ``1``: fp32 activations times dequantized weights. ``0`` (unset), ``2`` (fp16) and ``3`` (bf16) run
        as ``1`` for an fp32 model on CPU.
    """

    block_size: int = 128
    symmetric: bool = True
    accuracy_level: int = 4

    def __post_init__(self) -> None:
        if not _is_int(self.block_size) or self.block_size not in BLOCK_SIZES:
            raise ValueError(f"Expected `block_size` in ({', '.join(map(str, BLOCK_SIZES))}), got {self.block_size!r}.")
        if not isinstance(self.symmetric, bool):
            raise ValueError(f"Expected `symmetric` to be true or false, got {self.symmetric!r}.")
        if not _is_int(self.accuracy_level) or self.accuracy_level not in ACCURACY_LEVELS:
            raise ValueError(
                f"Expected `accuracy_level` in ({', '.join(map(str, ACCURACY_LEVELS))}), got {self.accuracy_level!r}."
            )


def int4_bytes(gemm: LinearGemm, settings: OnnxInt4Settings) -> int:
    """Bytes of a layer's 4-bit weights: per output, its inputs padded to whole blocks of 4-bit codes, one
    fp32 scale per block, and for ``symmetric=False`` a 4-bit zero point per block.

    >>> block_32 = OnnxInt4Settings(block_size=32)
    >>> int4_bytes(LinearGemm("fc", in_features=96, out_features=4), block_32)  # 4 * 3 * (16 + 4)
    240
    >>> int4_bytes(LinearGemm("fc", in_features=4, out_features=64), block_32)  # > 4 * 4 * 64 = 1024
    1280
    """
    blocks = -(-gemm.in_features // settings.block_size)
    zero_points = 0 if settings.symmetric else -(-blocks // 2)
    return gemm.out_features * (blocks * (settings.block_size // 2 + _FP32_BYTES) + zero_points)


def _quantizer_class() -> type:
    """ONNX Runtime's ``MatMulNBitsQuantizer``, imported without its import-time ``logging.basicConfig(INFO)``.

    ``basicConfig`` does nothing while the root logger has a handler, so a placeholder stands there
    during the import; the application's logging stays as the application set it.
    """
    placeholder = logging.NullHandler()
    logging.root.addHandler(placeholder)
    try:
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    finally:
        logging.root.removeHandler(placeholder)
    return MatMulNBitsQuantizer


def _convert(
    fp32: bytes, settings: OnnxInt4Settings, data: QuantizationData, keep_nodes: list[str]
) -> tuple[bytes, dict[str, float]]:
    model = onnx.load_from_string(fp32)
    linears = linear_gemms(model.graph)
    # A layer whose padded 4-bit blocks would not be smaller than its fp32 weights (fewer inputs than
    # about block_size / 8) would lose accuracy for nothing: it stays an fp32 Gemm, as do the kept layers.
    kept = set(keep_nodes)
    smaller = [g for g in linears if int4_bytes(g, settings) < _FP32_BYTES * g.numel and g.node not in kept]
    chosen = set(gemms_to_matmuls(model, smaller))
    # Only Linear weights are quantized: any other MatMul with a constant operand stays fp32.
    others = [node.name for node in model.graph.node if node.op_type == "MatMul" and node.name not in chosen]
    quantizer = _quantizer_class()(
        model,
        bits=4,
        block_size=settings.block_size,
        is_symmetric=settings.symmetric,
        accuracy_level=settings.accuracy_level,
        nodes_to_exclude=others,
    )
    quantizer.process()
    quantized = quantizer.model.model
    # Measured on the result, not assumed: the share of Linear weights that are 4-bit in the artifact.
    int4 = [node for node in quantized.graph.node if node.op_type == "MatMulNBits"]
    int4_numel = sum(_k_times_n(node) for node in int4)
    total = sum(gemm.numel for gemm in linears)
    info = {
        "int4_weight_fraction": int4_numel / total if total else 0.0,
        "int4_layers": len(int4),
        "fp32_layers": len(linears) - len(int4),
    }
    return quantized.SerializeToString(), info


def _k_times_n(node: onnx.NodeProto) -> int:
    attributes = {attr.name: attr.i for attr in node.attribute}
    return attributes["K"] * attributes["N"]


# The error bound, from the arithmetic. ONNX Runtime's symmetric 4-bit code: a block's largest |w| maps to
# code -8, so the step is s = max|w| / 8 and rounding errs by at most s/2 (a value of the other sign above 7.5 s
# clips at code 7, off by up to s: rare); asymmetric: s = (max - min) / 15, about the same. Rounding
# errors spread uniformly, RMS s / sqrt(12). For weights uniform in [-a, a] (nn.Linear's initialisation, where a
# block's max|w| is ~a), whose RMS is a / sqrt(3), each output of a layer is off by
# (a / 8 / sqrt(12)) / (a / sqrt(3)) = 1/16 of its RMS, whatever the block size; int8 activations
# (accuracy_level 4, step max/127 per block) add ~0.6 %. Over up to three layers errors add in quadrature,
# sqrt(3) / 16 = 11 %; the largest error among a few hundred logits is ~3x its RMS while the largest logit is
# ~2.5x its RMS, and a further 2x covers one small net's draw: 0.26. Measured on 40 random draws of the two test
# nets: median 0.09-0.11, largest 0.19; the trained tweets MLP: 0.023.
METHOD = register(
    onnx_method(
        "onnx_int4",
        OnnxInt4Settings,
        _convert,
        summary="ONNX Runtime MatMulNBits: 4-bit weight blocks with fp32 scales, int8 compute",
        max_relative_error=0.26,
    )
)
