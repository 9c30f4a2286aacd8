"""Sparse-input ONNX artifacts: a first ``nn.Linear`` over term weights (TF-IDF, counts) computed as an
embedding bag, so a prediction costs what its terms cost, not the vocabulary's width.

A dense artifact multiplies a ``(B, D)`` row by the whole ``(D, H)`` first layer although a tweet uses
about 15 of its 5,000 columns. :func:`to_sparse_input` rewrites a method's dense ONNX graph so that it
reads ``ids`` and ``weights`` (``runtime.Bag``: ``(B, L)`` term columns and their values, padded with
weight 0) and computes that layer as ``bias + sum_l weights[b, l] * rows[ids[b, l]]``: gather the rows
(of ``W^T``) of the terms present, one small matrix product per text, add the bias. Every other node of
the method's graph stays as the method wrote it. The rows are held as the method quantized them:

- ``fp32`` (a ``Gemm``): the fp32 rows.
- int8 (``MatMulInteger`` of ``quantize_dynamic``, ``QGemm`` of ``quantize_static``): the method's own int8
  codes, scales and zero points, byte for byte, and its own arithmetic: the term weights quantized to uint8 as
  the dense graph quantizes its input (per call, or with the calibrated scale), multiplied by the gathered codes
  in integers, the bias added, scaled once per output channel. The zeros a dense row holds add nothing to an
  integer sum, so the layer's output is the dense artifact's, bit for bit (``quantize_static`` requantizes in
  fp32 where ``QGemm`` uses its own multiplier: a rounding tie may land the other way).
- 4-bit (``MatMulNBits``): each term's row quantized in blocks of ``block_size`` along the row (the method's
  ``block_size`` and ``symmetric`` rule, round to nearest, as ONNX Runtime's ``MatMulNBits`` quantizer rounds),
  gathered and dequantized by ONNX Runtime's ``GatherBlockQuantized``. ``MatMulNBits`` blocks run along
  the inputs (the terms), which a row gather cannot read, so these are the layer's own 4-bit rows.

The rows are the vocabulary's columns, in order: a smaller vocabulary is a table with fewer rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from quantization.artifacts.bag_nodes import CONTRIB, Rows, bag_nodes, int4_rows
from runtime import TERM_IDS, TERM_WEIGHTS


def first_linear(model: nn.Module) -> str | None:
    """The name of the ``nn.Linear`` that reads the model's input directly: ``""`` for a model that is one,
    ``"0"`` for an ``nn.Sequential`` that starts with one; ``None`` for any other model.

    >>> first_linear(nn.Sequential(nn.Linear(8, 4), nn.ReLU())), first_linear(nn.Linear(8, 2))
    ('0', '')
    """
    if type(model) is nn.Linear:
        return ""
    if isinstance(model, nn.Sequential) and len(model) and type(model[0]) is nn.Linear:
        return "0"
    return None


def to_sparse_input(
    quantized: bytes,
    first_output: str,
    linear: nn.Linear,
    block_size: int = 128,
    symmetric: bool = True,
) -> tuple[bytes, str]:
    """Rewrite ``quantized`` (an ONNX artifact whose input ``x`` feeds only its first Linear layer) to read
    term ids and weights; return the new model's bytes and the kind of rows it gathers (fp32, int8, int4).

    Args:
        quantized: The method's dense ONNX model.
        first_output: The name the fp32 export gave the first layer's output (``/0/Gemm_output_0``); a
            QOperator graph names its quantized form ``<name>_quantized``.
        linear: The fp32 first layer (4-bit rows are quantized from it).
        block_size: 4-bit rows: weights per scale along a row.
        symmetric: 4-bit rows: codes -8..7 times the scale (``False``: 0..15 and a zero point per block).

    Raises:
        ValueError: The graph's input feeds more than the first layer, or the layer's nodes are not a form
            this rewrite knows (fp32 Gemm, MatMulInteger, QGemm, MatMulNBits): the artifact stays dense.
    """
    model = onnx.load_from_string(quantized)
    graph = model.graph
    if len(graph.input) != 1:
        raise ValueError(f"Expected a graph with one input, got {len(graph.input)}.")
    x = graph.input[0].name
    produced = {out for node in graph.node for out in node.output}
    target = first_output if first_output in produced else f"{first_output}_quantized"
    if target not in produced:
        raise ValueError(f"Found no node that writes the first layer's output {first_output!r}.")
    region = _region(graph, x, target)
    initializers = {init.name: init for init in graph.initializer}
    rows = _rows(region, initializers, linear, block_size, symmetric)
    out_scale = _output_quantization(region, target, initializers)
    nodes, tables = bag_nodes(rows, target, out_scale)
    inside = {id(node) for node in region}
    at = max(i for i, node in enumerate(graph.node) if id(node) in inside)  # consumers of the output come later
    kept = [node for node in graph.node if id(node) not in inside]
    before = sum(1 for i, node in enumerate(graph.node) if i < at and id(node) not in inside)
    del graph.node[:]
    graph.node.extend([*kept[:before], *nodes, *kept[before:]])
    batch = graph.input[0].type.tensor_type.shape.dim[0]
    dims = [batch.dim_param or batch.dim_value or "batch", "terms"]
    del graph.input[:]
    graph.input.extend(
        [
            helper.make_tensor_value_info(TERM_IDS, TensorProto.INT64, dims),
            helper.make_tensor_value_info(TERM_WEIGHTS, TensorProto.FLOAT, dims),
        ]
    )
    graph.initializer.extend(numpy_helper.from_array(array, name) for name, array in tables.items())
    _drop_unused(graph)
    if rows.kind == "int4" and all(opset.domain != CONTRIB for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid(CONTRIB, 1))
    return model.SerializeToString(), rows.kind


def table_rows(data: bytes) -> int | None:
    """The number of term rows a sparse-input ONNX artifact's first layer gathers from (its vocabulary's
    size), or ``None`` for another model."""
    graph = onnx.load_from_string(data).graph
    return next((int(init.dims[0]) for init in graph.initializer if init.name == "bag.rows"), None)


def _region(graph: onnx.GraphProto, x: str, target: str) -> list[onnx.NodeProto]:
    """The nodes between the input and ``target``: descendants of ``x`` that are ancestors of ``target``;
    refused unless nothing else reads ``x`` or any tensor of theirs but ``target``."""
    below = {x}
    for node in graph.node:  # nodes are in topological order
        if below.intersection(node.input):
            below.update(node.output)
    producer = {out: node for node in graph.node for out in node.output}
    above, stack = set(), [target]
    while stack:
        node = producer.get(stack.pop())
        if node is not None and id(node) not in above:
            above.add(id(node))
            stack.extend(node.input)
    region = [node for node in graph.node if id(node) in above and below.intersection(node.input)]
    inside = {id(node) for node in region}
    internal = ({x} | {out for node in region for out in node.output}) - {target}
    for node in graph.node:
        if id(node) not in inside and internal.intersection(node.input):
            raise ValueError(f"The model's input feeds more than its first layer (node {node.name!r}).")
    if {out.name for out in graph.output} & internal:
        raise ValueError("The first layer's intermediate tensors are graph outputs.")
    return region


def _array(initializers: dict, name: str) -> np.ndarray:
    if name not in initializers:
        raise ValueError(f"Expected a constant {name!r} in the first layer.")
    return numpy_helper.to_array(initializers[name])


def _attribute(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _bias_of_add(region: Iterable[onnx.NodeProto], initializers: dict) -> np.ndarray | None:
    adds = [node for node in region if node.op_type == "Add"]
    constant = [name for node in adds for name in node.input if name in initializers]
    return _array(initializers, constant[-1]).astype(np.float32) if constant else None


def _rows(
    region: list[onnx.NodeProto], initializers: dict, linear: nn.Linear, block_size: int, symmetric: bool
) -> Rows:
    ops = {node.op_type: node for node in region}
    if "MatMulInteger" in ops:  # quantize_dynamic: x -> DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul -> Add
        matmul = ops["MatMulInteger"]
        table = _array(initializers, matmul.input[1])  # (D, H) int8 or uint8 codes
        zero = _array(initializers, matmul.input[3]) if len(matmul.input) > 3 and matmul.input[3] else None
        scales = [
            name for node in region if node.op_type == "Mul" for name in node.input if name in initializers
        ]  # the weight scale, multiplied with the activation's scale
        if len(scales) != 1:
            raise ValueError("Expected one weight scale in the first layer's dynamic quantization.")
        scale = _array(initializers, scales[0])
        zero = np.zeros_like(scale, dtype=table.dtype) if zero is None else zero
        return Rows("int8", table, _bias_of_add(region, initializers), scale, zero)
    if "QGemm" in ops:  # quantize_static (QOperator): x -> QuantizeLinear -> QGemm
        gemm = ops["QGemm"]
        if _attribute(gemm, "transA") or _attribute(gemm, "alpha", 1.0) != 1.0:
            raise ValueError("Expected a QGemm of x @ W (no transA, alpha 1).")
        table = _array(initializers, gemm.input[3])
        table = np.ascontiguousarray(table.T) if _attribute(gemm, "transB") else table  # (H, D) -> (D, H)
        scale, zero = _array(initializers, gemm.input[4]), _array(initializers, gemm.input[5])
        bias = _array(initializers, gemm.input[6]) if len(gemm.input) > 6 and gemm.input[6] else None  # int32
        x_scale, x_zero = _array(initializers, gemm.input[1]), _array(initializers, gemm.input[2])
        return Rows("int8", table, bias, scale, zero, input_scale=x_scale, input_zero_point=x_zero)
    if "MatMulNBits" in ops:  # 4-bit weights: the layer's own 4-bit rows, from its fp32 weights
        weight = linear.weight.detach().float().cpu().numpy().T  # (D, H)
        bias = _bias_of_add(region, initializers)
        return int4_rows(np.ascontiguousarray(weight), bias, block_size, symmetric)
    if set(ops) in ({"Gemm"}, {"MatMul"}, {"MatMul", "Add"}):  # fp32 (a layer no method quantized)
        if "Gemm" in ops:
            gemm = ops["Gemm"]
            if (
                _attribute(gemm, "transA")
                or _attribute(gemm, "alpha", 1.0) != 1.0
                or _attribute(gemm, "beta", 1.0) != 1.0
            ):
                raise ValueError("Expected a Gemm of x @ W^T + b.")
            table = _array(initializers, gemm.input[1]).astype(np.float32)
            table = table.T if _attribute(gemm, "transB") else table
            bias = _array(initializers, gemm.input[2]).astype(np.float32) if len(gemm.input) > 2 else None
        else:
            table = _array(initializers, ops["MatMul"].input[1]).astype(np.float32)
            bias = _bias_of_add(region, initializers)
        return Rows("fp32", np.ascontiguousarray(table), bias)
    raise ValueError(f"The first layer's nodes ({', '.join(sorted(ops))}) are not a form that reads term rows.")


def _output_quantization(region: list[onnx.NodeProto], target: str, initializers: dict) -> tuple[str, str] | None:
    """The ``(scale, zero point)`` initializer names a QOperator layer quantizes its output with, else ``None``."""
    writer = next(node for node in region if target in node.output)
    if writer.op_type == "QGemm" and len(writer.input) > 7 and writer.input[7]:
        return writer.input[7], writer.input[8] if len(writer.input) > 8 else ""
    return None


def _drop_unused(graph: onnx.GraphProto) -> None:
    read = {name for node in graph.node for name in node.input} | {out.name for out in graph.output}
    for init in [init for init in graph.initializer if init.name not in read]:
        graph.initializer.remove(init)
    known = read | {out for node in graph.node for out in node.output}
    for info in [info for info in graph.value_info if info.name not in known]:
        graph.value_info.remove(info)
