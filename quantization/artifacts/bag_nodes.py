"""The ONNX nodes of an embedding bag: a first Linear over term weights computed from the rows of the terms
present, ``bias + sum_l weights[b, l] * rows[ids[b, l]]``, for rows held in fp32, int8 or 4 bits
(:class:`Rows`); ``quantization.artifacts.embedding_bag`` puts them in place of a dense graph's first layer.

The inputs are ``runtime.Bag``'s: ``ids`` and ``weights``, ``(B, L)``, padded with weight 0. One product per
text, ``(B, 1, L) @ (B, L, H)``: measured here against a scatter-add of every gathered row (ScatterND) and a
weighted sum (Mul + ReduceSum) on the tweets MLP, it was the fastest at batch 1 and 256 with the fewest nodes,
and at batch 1 ONNX Runtime's cost is mostly per node (~0.5 us each, ~3.5 us a call).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from runtime import TERM_IDS, TERM_WEIGHTS

CONTRIB = "com.microsoft"
_AXIS_1 = "bag.axis_1"


@dataclass(frozen=True)
class Rows:
    """What the bag gathers from: ``table`` rows (one per term, ``(D, H)`` or packed), and what turns the
    weighted sum of gathered rows into the layer's output (``scale``, ``zero_point``, ``bias``; int8 rows also
    how the term weights are quantized: per call, or with the calibrated ``input_scale``)."""

    kind: str  # "fp32", "int8" or "int4"
    table: np.ndarray
    bias: np.ndarray | None  # fp32 (H,); int8 with an input scale: int32, in units of input_scale * scale
    scale: np.ndarray | None = None  # int8: () or (H,); int4: (D, blocks)
    zero_point: np.ndarray | None = None  # int8: () or (H,); int4: packed (D, ceil(blocks / 2))
    block_size: int = 0
    input_scale: np.ndarray | None = None  # int8: the calibrated scale of the term weights (None: per call)
    input_zero_point: np.ndarray | None = None


def int4_rows(weight: np.ndarray, bias: np.ndarray | None, block_size: int, symmetric: bool) -> Rows:
    """``(D, H)`` fp32 rows as 4-bit codes in blocks of ``block_size`` along each row, packed two per byte
    (the first in the low nibble) with one fp32 scale per block and a 4-bit zero point (8 when symmetric).

    Symmetric, the rule of ONNX Runtime's ``MatMulNBits`` quantizer: the block's value of largest magnitude maps
    to code -8, so the step is ``max|w| / 8`` and nothing clips but a value of the other sign above ``7.5``
    steps. Asymmetric: ``(max - min) / 15`` over a range that includes 0, and the zero point that maps 0.

    >>> rows = int4_rows(np.array([[0.8, -0.4, 0.2, 0.0]], np.float32), None, block_size=16, symmetric=True)
    >>> rows.scale.tolist(), rows.table.tolist()  # codes 0, 12, 6, 8 -> bytes 0 | 12 << 4, 6 | 8 << 4
    ([[-0.10000000149011612]], [[192, 134]])
    """
    depth, width = weight.shape
    if width % 2:
        raise ValueError(f"4-bit rows pack two codes a byte: the layer's {width} outputs are odd.")
    blocks = -(-width // block_size)
    padded = np.zeros((depth, blocks * block_size), np.float32)
    padded[:, :width] = weight
    grouped = padded.reshape(depth, blocks, block_size)  # (D, blocks, block_size)
    if symmetric:
        index = np.abs(grouped).argmax(axis=2)[..., None]
        scale = np.take_along_axis(grouped, index, axis=2)[..., 0] / -8.0  # signed: the largest maps to -8
        zero = np.full((depth, blocks), 8, np.int32)
    else:
        low, high = np.minimum(grouped.min(axis=2), 0.0), np.maximum(grouped.max(axis=2), 0.0)
        scale = (high - low) / 15.0
        zero = np.clip(np.round(-low / np.where(scale == 0, 1, scale)), 0, 15).astype(np.int32)
    scale = np.where(scale == 0, 1.0, scale).astype(np.float32)  # an all-zero block: any scale, codes = zero point
    codes = np.clip(np.round(grouped / scale[..., None]) + zero[..., None], 0, 15).astype(np.uint8)
    codes = codes.reshape(depth, -1)[:, :width]
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8)  # (D, H / 2)
    zero = np.pad(zero.astype(np.uint8), ((0, 0), (0, blocks % 2)))  # an even count of 4-bit zero points
    zero_packed = (zero[:, 0::2] | (zero[:, 1::2] << 4)).astype(np.uint8)
    return Rows("int4", packed, bias, scale, zero_packed, block_size)


def bag_nodes(rows: Rows, target: str, out_scale: tuple[str, str] | None) -> tuple[list, dict[str, np.ndarray]]:
    """The nodes that compute the layer from ``ids`` and ``weights`` into ``target``, and their constants."""
    tables: dict[str, np.ndarray] = {_AXIS_1: np.array([1], np.int64), "bag.rows": rows.table}
    node = helper.make_node
    if rows.kind == "int4":
        tables["bag.scales"] = rows.scale
        tables["bag.zero_points"] = rows.zero_point
        gather = [
            node(
                "GatherBlockQuantized",
                ["bag.rows", TERM_IDS, "bag.scales", "bag.zero_points"],
                ["bag.gathered"],
                name="bag/GatherBlockQuantized",
                domain=CONTRIB,
                gather_axis=0,
                quantize_axis=1,
                block_size=rows.block_size,
                bits=4,
            )
        ]
    else:
        gather = [node("Gather", ["bag.rows", TERM_IDS], ["bag.gathered"], name="bag/Gather", axis=0)]
    if rows.kind == "int8":
        steps, value = _int8_bag(rows, tables)
    else:
        steps = [
            *gather,
            node("Unsqueeze", [TERM_WEIGHTS, _AXIS_1], ["bag.weights"], name="bag/Unsqueeze"),  # (B, 1, L)
            node("MatMul", ["bag.weights", "bag.gathered"], ["bag.sum3"], name="bag/MatMul"),  # (B, 1, H)
            node("Squeeze", ["bag.sum3", _AXIS_1], ["bag.sum"], name="bag/Squeeze"),  # (B, H)
        ]
        value = "bag.sum"
    if rows.bias is not None and rows.kind != "int8":
        tables["bag.bias"] = rows.bias
        steps.append(node("Add", [value, "bag.bias"], ["bag.biased"], name="bag/Add"))
        value = "bag.biased"
    if out_scale is not None:  # the next QOperator node reads the layer's output quantized, as the dense graph's
        steps.append(node("QuantizeLinear", [value, *filter(None, out_scale)], [target], name="bag/QuantizeLinear"))
    else:
        steps[-1].output[0] = target
    return steps, tables


def _int8_bag(rows: Rows, tables: dict[str, np.ndarray]) -> tuple[list[onnx.NodeProto], str]:
    """The int8 layer as the dense graph computes it, on the gathered rows: the term weights quantized to uint8
    (per call, or with the calibrated scale), multiplied by the codes in integers (``MatMulInteger``: the
    dense product's sum without its zeros), the int32 bias added, then scaled to fp32 (plus the bias, per call).
    Multiplying int8 codes avoids widening every gathered row to fp32: 2.8x faster at batch 256 measured here."""
    node = helper.make_node
    # MatMulInteger takes a per-column zero point only for a 2-D B: the gathered rows are 3-D, so a zero point
    # other than 0 (uint8 weights) is subtracted after the product, as zero_point[h] * sum(quantized weights).
    shifted = bool(np.any(rows.zero_point))
    tables["bag.zero_point"] = np.zeros((), rows.table.dtype)
    steps = [node("Gather", ["bag.rows", TERM_IDS], ["bag.codes"], name="bag/Gather", axis=0)]  # (B, L, H) int8
    if rows.input_scale is None:  # as DynamicQuantizeLinear(x): one scale per call, the range including 0
        steps.append(
            node("DynamicQuantizeLinear", [TERM_WEIGHTS], ["bag.wq", "bag.ws", "bag.wz"], name="bag/DynamicQuantize")
        )
        tables["bag.scale"] = rows.scale.astype(np.float32)
        steps.append(node("Mul", ["bag.ws", "bag.scale"], ["bag.unit"], name="bag/Mul_scales"))
    else:
        tables |= {"bag.ws": rows.input_scale, "bag.wz": rows.input_zero_point}
        tables["bag.unit"] = (rows.input_scale.astype(np.float32) * rows.scale.astype(np.float32)).astype(np.float32)
        steps.append(node("QuantizeLinear", [TERM_WEIGHTS, "bag.ws", "bag.wz"], ["bag.wq"], name="bag/Quantize"))
    product = ["bag.wq3", "bag.codes", "bag.wz", "bag.zero_point"]
    steps += [
        node("Unsqueeze", ["bag.wq", _AXIS_1], ["bag.wq3"], name="bag/Unsqueeze"),  # (B, 1, L) uint8
        node("MatMulInteger", product, ["bag.acc"], name="bag/MatMulInteger"),  # (B, 1, H) int32
    ]
    if shifted:
        tables["bag.code_zero"] = rows.zero_point.astype(np.int32)
        steps += [
            node("Cast", ["bag.wq3"], ["bag.wq3_int"], name="bag/Cast_weights", to=TensorProto.INT32),
            node("Sub", ["bag.wq3_int", "bag.wz_int"], ["bag.wq3_centred"], name="bag/Sub_weights_zero"),
            node("ReduceSum", ["bag.wq3_centred", "bag.axis_2"], ["bag.wq_sum"], name="bag/ReduceSum"),  # (B, 1, 1)
            node("Mul", ["bag.wq_sum", "bag.code_zero"], ["bag.shift"], name="bag/Mul_zero"),
            node("Sub", ["bag.acc", "bag.shift"], ["bag.acc_centred"], name="bag/Sub_zero"),
        ]
        steps.insert(-5, node("Cast", ["bag.wz"], ["bag.wz_int"], name="bag/Cast_zero", to=TensorProto.INT32))
        tables["bag.axis_2"] = np.array([2], np.int64)
    acc = "bag.acc_centred" if shifted else "bag.acc"  # (B, 1, H) int32
    if rows.input_scale is not None and rows.bias is not None:  # QGemm's int32 bias, in the accumulator's units
        tables["bag.bias_int32"] = rows.bias.astype(np.int32)
        steps.append(node("Add", [acc, "bag.bias_int32"], ["bag.acc_biased"], name="bag/Add_int32"))
        acc = "bag.acc_biased"
    steps += [
        node("Cast", [acc], ["bag.acc_float"], name="bag/Cast", to=TensorProto.FLOAT),
        node("Mul", ["bag.acc_float", "bag.unit"], ["bag.sum3"], name="bag/Mul"),
        node("Squeeze", ["bag.sum3", _AXIS_1], ["bag.sum"], name="bag/Squeeze"),  # (B, H)
    ]
    value = "bag.sum"
    if rows.input_scale is None and rows.bias is not None:  # quantize_dynamic adds an fp32 bias
        tables["bag.bias"] = rows.bias
        steps.append(node("Add", [value, "bag.bias"], ["bag.biased"], name="bag/Add"))
        value = "bag.biased"
    return steps, value
