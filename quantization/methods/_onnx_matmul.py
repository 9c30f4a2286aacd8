"""``nn.Linear`` layers of an exported ONNX graph, and their rewrite from ``Gemm`` to ``MatMul + Add``.

The TorchScript exporter writes ``nn.Linear`` on a ``(B, in)`` input as one ``Gemm`` with the
``(out, in)`` weight and ``transB=1``. Weight-only quantizers that rewrite ``MatMul`` nodes only
(ONNX Runtime's ``MatMulNBits``) skip a ``Gemm``, so a layer is rewritten first as
``MatMul(x, W^T) + Add(bias)``, the same arithmetic with a ``(in, out)`` weight.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper, numpy_helper


@dataclass(frozen=True)
class LinearGemm:
    """A ``Gemm`` node that computes ``x @ W^T + b`` with a constant weight, as ``nn.Linear`` exports.

    Args:
        node: The node's name (its first output's where it has none).
        in_features: ``K``, the weight's input dimension.
        out_features: ``N``, the weight's output dimension.
    """

    node: str
    in_features: int
    out_features: int

    @property
    def numel(self) -> int:
        return self.in_features * self.out_features


def _name(node: onnx.NodeProto) -> str:
    return node.name or node.output[0]  # the TorchScript exporter names every node; other tools may not


def _attributes(node: onnx.NodeProto) -> dict[str, object]:
    return {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}


def linear_gemms(graph: onnx.GraphProto) -> list[LinearGemm]:
    """Every ``Gemm`` of ``graph`` with a constant 2-D weight, ``alpha = beta = 1`` and no ``transA``, in order.

    >>> from torch import nn
    >>> import torch
    >>> from quantization.artifacts.onnx_runtime import export_onnx
    >>> model = onnx.load_from_string(export_onnx(nn.Sequential(nn.Linear(8, 4), nn.ReLU()), torch.zeros(1, 8)))
    >>> linear_gemms(model.graph)
    [LinearGemm(node='/0/Gemm', in_features=8, out_features=4)]
    """
    shapes = {init.name: tuple(init.dims) for init in graph.initializer}
    found = []
    for node in graph.node:
        attributes = _attributes(node)
        weight_shape = shapes.get(node.input[1]) if node.op_type == "Gemm" else None
        linear = (
            weight_shape is not None
            and len(weight_shape) == 2
            and not attributes.get("transA", 0)
            and attributes.get("alpha", 1.0) == 1.0
            and attributes.get("beta", 1.0) == 1.0
        )
        if linear:
            out_features, in_features = weight_shape if attributes.get("transB", 0) else weight_shape[::-1]
            found.append(LinearGemm(_name(node), in_features, out_features))
    return found


def gemms_to_matmuls(model: onnx.ModelProto, gemms: list[LinearGemm]) -> list[str]:
    """Rewrite each of ``gemms`` in ``model`` (in place) as ``MatMul(x, W^T) + Add(bias)``; return the MatMul names.

    Each new ``(in, out)`` weight replaces the ``(out, in)`` one, which is dropped once no node reads
    it; node order, output names and every other node stay as they were.
    """
    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    selected = {gemm.node for gemm in gemms}
    transposed: dict[str, str] = {}  # (out, in) weight name -> (in, out) weight name, once per shared weight
    nodes, matmuls = [], []
    for node in graph.node:
        name = _name(node)
        if node.op_type != "Gemm" or name not in selected:
            nodes.append(node)
            continue
        x, weight = node.input[0], node.input[1]
        if weight not in transposed:
            array = numpy_helper.to_array(initializers[weight])
            array = array.T if _attributes(node).get("transB", 0) else array  # (out, in) -> (in, out)
            transposed[weight] = f"{weight}.in_out"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(array), transposed[weight]))
        bias = node.input[2] if len(node.input) > 2 and node.input[2] else None
        product = f"{node.output[0]}.matmul" if bias else node.output[0]
        matmuls.append(f"{name}.matmul")
        nodes.append(helper.make_node("MatMul", [x, transposed[weight]], [product], name=matmuls[-1]))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], name=f"{name}.bias"))
    del graph.node[:]
    graph.node.extend(nodes)
    read = {tensor for node in graph.node for tensor in node.input}
    unused = [init for init in graph.initializer if init.name in transposed and init.name not in read]
    for init in unused:
        graph.initializer.remove(init)
    return matmuls
