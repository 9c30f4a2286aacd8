"""An ONNX artifact's layers as native steps, node by node, and the files a bundle gains for the native core.

Each layer of the artifact's graph is matched to a native layer kind (a term bag of fp32, int8 or 4-bit rows, Gemm,
dynamic or static int8, MatMulNBits, Relu) with its own constants; a graph with any other node gets no native model
(:class:`NativeUnsupported` says why) and its bundle runs on ONNX Runtime.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from quantization.ship.device_build import device_files, footprint
from quantization.ship.native_model import (
    BIAS,
    BIAS_I32,
    INT8_COMPUTE,
    PER_CHANNEL,
    SIGNED,
    STATIC,
    ZERO_POINTS,
    NativeUnsupported,
    Step,
    model_image,
)
from runtime.native_bundle import NATIVE_FILE

# The nodes a layer starts with (the rest of a layer, e.g. MatMulInteger after DynamicQuantizeLinear, is read with it).
LAYER_OPS = ("Relu", "Gemm", "MatMul", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "QGemm")
LAYER_OPS += ("MatMulNBits",)


def native_model(artifact: bytes, preprocessing: Mapping[str, Any], classes: Sequence[str], sha256: str) -> bytes:
    """The native model image of a bundle's ONNX ``artifact`` (its SHA-256 ``sha256``), its ``preprocessing`` and
    ``classes``.

    Raises:
        NativeUnsupported: A node, input or featurizer setting the native core does not compute (the reason).
    """
    return model_image(read_steps(onnx.load_from_string(artifact).graph), preprocessing, classes, sha256)


class _Graph:
    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)

    def const(self, name: str) -> np.ndarray:
        if name not in self.constants:
            raise NativeUnsupported(f"a layer reads {name!r}, which is not a constant")
        return self.constants[name]

    def only_consumer(self, name: str, op: str) -> onnx.NodeProto:
        readers = self.consumers.get(name, [])
        if len(readers) != 1 or readers[0].op_type != op:
            raise NativeUnsupported(f"{name!r} is read by {[n.op_type for n in readers]}, expected one {op}")
        return readers[0]


def _attr(node: onnx.NodeProto, name: str, default: Any = 0) -> Any:
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _channels(scale: np.ndarray, zero: np.ndarray | None, n: int) -> tuple[int, list[np.ndarray]]:
    scale = np.asarray(scale, np.float32).reshape(-1)
    zero = np.zeros(scale.shape, np.int32) if zero is None else np.asarray(zero).astype(np.int32).reshape(-1)
    if scale.size not in (1, n) or zero.size != scale.size:
        raise NativeUnsupported(f"a scale of {scale.size} values for {n} outputs")
    return (PER_CHANNEL if scale.size == n and n > 1 else 0), [scale, zero]


def _codes_flag(codes: np.ndarray) -> int:
    if codes.dtype == np.int8:
        return SIGNED
    if codes.dtype == np.uint8:
        return 0
    raise NativeUnsupported(f"{codes.dtype} codes")


def _bias_after(g: _Graph, name: str, n: int, nodes: list) -> tuple[str, np.ndarray | None]:
    """An ``Add`` of a constant ``(n,)`` bias reading ``name`` (the only reader), taken into the layer."""
    readers = g.consumers.get(name, [])
    if len(readers) == 1 and readers[0].op_type == "Add":
        add = readers[0]
        other = add.input[1] if add.input[0] == name else add.input[0]
        if other in g.constants and g.constants[other].size == n:
            nodes.append(add)
            return add.output[0], g.constants[other].astype(np.float32).reshape(n)
    return name, None


def _bag(g: _Graph, graph: onnx.GraphProto) -> tuple[list[Step], str, set[str]]:
    bag = [node for node in graph.node if node.name.startswith("bag/")]
    ops = {node.op_type: node for node in bag}
    rows = g.const("bag.rows")
    depth, out = rows.shape[0], None
    if "GatherBlockQuantized" in ops:
        node = ops["GatherBlockQuantized"]
        width = rows.shape[1] * 2
        scales = g.const("bag.scales").astype(np.float32)
        arrays = [rows, scales, g.const("bag.zero_points")]  # (D, H / 2), (D, blocks), (D, ceil(blocks / 2))
        block = _attr(node, "block_size", 128)
        step = Step("bag_i4", depth, width, ZERO_POINTS, a=block, b=scales.shape[1], arrays=arrays)
    elif "MatMulInteger" in ops:
        width = rows.shape[1]
        shift = g.constants.get("bag.code_zero")
        if "DynamicQuantizeLinear" in ops:
            flags, arrays = _channels(g.const("bag.scale"), shift, width)
            step = Step("bag_i8", depth, width, flags | _codes_flag(rows), arrays=[rows, *arrays])
        else:
            shift = np.zeros(1, np.int32) if shift is None else np.asarray(shift, np.int32).reshape(-1)
            flags, arrays = _channels(np.ones(shift.size, np.float32), shift, width)  # the scale is in the unit
            step = Step("bag_i8", depth, width, flags | _codes_flag(rows) | STATIC, arrays=[rows, *arrays])
            step.in_scale, step.in_zero = float(g.const("bag.ws")), int(g.const("bag.wz"))
            step.arrays.append(np.broadcast_to(g.const("bag.unit").astype(np.float32), (width,)))
    elif "Gather" in ops and rows.dtype == np.float32:
        width = rows.shape[1]
        step = Step("bag_f32", depth, width, arrays=[rows])
    else:
        raise NativeUnsupported(f"a term bag of nodes {sorted(ops)}")
    if "bag.bias" in g.constants:
        step.flags |= BIAS
        bias_f32 = g.const("bag.bias").astype(np.float32)
    if "bag.bias_int32" in g.constants:
        step.flags |= BIAS_I32
    if step.flags & BIAS:
        step.arrays.append(bias_f32)
    if step.flags & BIAS_I32:
        step.arrays.append(g.const("bag.bias_int32").astype(np.int32))
    steps = [step]
    quantize = next((node for node in bag if node.name == "bag/QuantizeLinear"), None)
    if quantize is not None:
        scale, zero = g.const(quantize.input[1]), g.const(quantize.input[2])
        steps.append(Step("quantize", width, width, out_scale=float(scale), out_zero=int(zero)))
        out = quantize.output[0]
    last = out or next(node.output[0] for node in reversed(bag) if node.op_type != "QuantizeLinear")
    return steps, last, {node.name for node in bag}


def read_steps(graph: onnx.GraphProto) -> list[Step]:
    """The artifact's layers, in order, as native steps.

    Raises:
        NativeUnsupported: A node the native core does not compute, or tensors that do not chain.
    """
    g = _Graph(graph)
    if len(graph.output) != 1:
        raise NativeUnsupported(f"{len(graph.output)} graph outputs")
    steps: list[Step] = []
    done: set[int] = set()
    names = {inp.name for inp in graph.input}
    if "bag.rows" in g.constants:
        steps, current, bag_names = _bag(g, graph)
        done |= {id(node) for node in graph.node if node.name in bag_names}
        width = steps[-1].out_dim
    elif len(names) == 1:
        current = graph.input[0].name
        dims = graph.input[0].type.tensor_type.shape.dim
        width = dims[-1].dim_value if dims else 0
    else:
        raise NativeUnsupported(f"inputs {sorted(names)}")
    for node in graph.node:
        if id(node) in done:
            continue
        if node.op_type not in LAYER_OPS:
            raise NativeUnsupported(f"a {node.op_type} node ({node.name})")
        if not node.input or node.input[0] != current:
            raise NativeUnsupported(f"node {node.name or node.op_type} does not read the previous layer's output")
        extra: list = []
        step, current = _step(g, node, width, extra)
        done |= {id(n) for n in extra}
        done.add(id(node))
        steps.append(step)
        width = step.out_dim
    if current != graph.output[0].name:
        raise NativeUnsupported("the layers do not end at the graph's output")
    return steps


def _step(g: _Graph, node: onnx.NodeProto, width: int, extra: list) -> tuple[Step, str]:
    op = node.op_type
    if op == "Relu":
        return Step("relu", width, width), node.output[0]
    if op == "Gemm":
        if _attr(node, "transA") or _attr(node, "alpha", 1.0) != 1.0 or _attr(node, "beta", 1.0) != 1.0:
            raise NativeUnsupported("a Gemm other than x @ W^T + b")
        w = g.const(node.input[1]).astype(np.float32)
        w = w if _attr(node, "transB") else w.T  # (N, K)
        step = Step("gemm", w.shape[1], w.shape[0], arrays=[w])
        if len(node.input) > 2 and node.input[2]:
            step.flags |= BIAS
            step.arrays.append(np.broadcast_to(g.const(node.input[2]).astype(np.float32), (w.shape[0],)))
        return step, node.output[0]
    if op == "MatMul":
        w = g.const(node.input[1]).astype(np.float32)  # (K, N)
        out, bias = _bias_after(g, node.output[0], w.shape[1], extra)
        step = Step("gemm", w.shape[0], w.shape[1], arrays=[w.T])
        if bias is not None:
            step.flags |= BIAS
            step.arrays.append(bias)
        return step, out
    if op == "DynamicQuantizeLinear":
        matmul = g.only_consumer(node.output[0], "MatMulInteger")
        scale_mul = next(n for n in g.consumers.get(node.output[1], []) if n.op_type == "Mul")
        w_scale = scale_mul.input[1] if scale_mul.input[0] == node.output[1] else scale_mul.input[0]
        cast = g.only_consumer(matmul.output[0], "Cast")
        mul = g.only_consumer(cast.output[0], "Mul")
        codes = g.const(matmul.input[1])  # (K, N)
        zero = g.const(matmul.input[3]) if len(matmul.input) > 3 and matmul.input[3] else None
        flags, arrays = _channels(g.const(w_scale), zero, codes.shape[1])
        extra += [matmul, scale_mul, cast, mul]
        out, bias = _bias_after(g, mul.output[0], codes.shape[1], extra)
        step = Step("dynq", codes.shape[0], codes.shape[1], flags | _codes_flag(codes), arrays=[codes, *arrays])
        if bias is not None:
            step.flags |= BIAS
            step.arrays.append(bias)
        return step, out
    if op == "QuantizeLinear":
        scale, zero = g.const(node.input[1]), g.const(node.input[2])
        if scale.size != 1 or zero.dtype != np.uint8:
            raise NativeUnsupported("a QuantizeLinear other than per tensor to uint8")
        return Step("quantize", width, width, out_scale=float(scale), out_zero=int(zero)), node.output[0]
    if op == "DequantizeLinear":
        scale, zero = g.const(node.input[1]), g.const(node.input[2])
        if scale.size != 1 or zero.dtype != np.uint8:
            raise NativeUnsupported("a DequantizeLinear other than per tensor from uint8")
        return Step("dequantize", width, width, in_scale=float(scale), in_zero=int(zero)), node.output[0]
    if op == "QGemm":
        if _attr(node, "transA") or _attr(node, "alpha", 1.0) != 1.0:
            raise NativeUnsupported("a QGemm other than x @ W^T")
        codes = g.const(node.input[3])
        codes = codes if _attr(node, "transB") else codes.T  # (N, K)
        n, k = codes.shape
        flags, arrays = _channels(g.const(node.input[4]), g.const(node.input[5]), n)
        step = Step("qgemm", k, n, flags | _codes_flag(codes), arrays=[codes, *arrays])
        step.in_scale, step.in_zero = float(g.const(node.input[1])), int(g.const(node.input[2]))
        if len(node.input) > 6 and node.input[6]:
            step.flags |= BIAS_I32
            step.arrays.append(np.broadcast_to(g.const(node.input[6]).astype(np.int32), (n,)))
        if len(node.input) > 7 and node.input[7]:
            step.flags |= STATIC
            step.out_scale, step.out_zero = float(g.const(node.input[7])), int(g.const(node.input[8]))
        return step, node.output[0]
    if op == "MatMulNBits":
        k, n, bits, block = (int(_attr(node, key)) for key in ("K", "N", "bits", "block_size"))
        if bits != 4 or any(name for name in node.input[4:]):
            raise NativeUnsupported("a MatMulNBits other than 4-bit without g_idx or bias inputs")
        blocks = -(-k // block)
        codes = g.const(node.input[1]).reshape(n, blocks, block // 2)
        scales = g.const(node.input[2]).astype(np.float32).reshape(n, blocks)
        flags = INT8_COMPUTE if int(_attr(node, "accuracy_level")) == 4 else 0
        arrays = [codes, scales]
        if len(node.input) > 3 and node.input[3]:
            zeros = g.const(node.input[3])
            if zeros.dtype != np.uint8:
                raise NativeUnsupported("4-bit zero points that are not packed uint8")
            flags |= ZERO_POINTS
            arrays.append(zeros.reshape(n, -1))
        out, bias = _bias_after(g, node.output[0], n, extra)
        step = Step("nbits", k, n, flags, a=block, b=blocks, arrays=arrays)
        if bias is not None:
            step.flags |= BIAS
            step.arrays.append(bias)
        return step, out
    raise NativeUnsupported(f"a {op} node ({node.name})")


def bundle_files(
    artifact: bytes, suffix: str, preprocessing: Mapping[str, Any], classes: Sequence[str], sha256: str
) -> tuple[dict[str, bytes], dict[str, Any]]:
    """The files a bundle gains for the native core (its native model and its device build, ``device/``) and its model
    card's ``native`` entry: the model's bytes and the device build's flash and RAM, or why it has none (its bundle
    then runs on ONNX Runtime or torch)."""
    if suffix != ".onnx":
        return {}, {"unsupported": "a torch artifact"}
    try:
        steps = read_steps(onnx.load_from_string(artifact).graph)
        image = model_image(steps, preprocessing, classes, sha256)
    except (NativeUnsupported, KeyError, IndexError, StopIteration) as err:  # StopIteration: a layer's node missing
        return {}, {"unsupported": f"the native core does not compute {err}"}
    device = device_files(image, steps, preprocessing, len(classes))
    card = {
        "file": NATIVE_FILE,
        "model_bytes": len(image),
        "device": {"folder": "device", **footprint(device, len(image))},
    }
    return {NATIVE_FILE: image, **device}, card
