"""ONNX int8 models checked against the CPU arithmetic that can break them: AVX2 without VNNI.

There, ONNX Runtime multiplies u8 activations by s8 weights with ``vpmaddubsw``, which adds each
pair of adjacent products (k = 2i, 2i+1) in int16 *with saturation* before widening to int32.
A pair saturates once ``|a0*w0 + a1*w1| > 32767``, e.g. 255 * 127 * 2. With weights in
[-64, 64] (``reduce_range``) the largest pair is 255 * 64 * 2 = 32640 and nothing can saturate;
u8 x u8 kernels widen to int16 first and are exact. VNNI/AMX CPUs accumulate in int32 and never
saturate, so the same file can be exact on one machine and wrong on another: these functions
emulate the AVX2 arithmetic on any machine.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

INT16_MIN, INT16_MAX = -32768, 32767
U8_MAX = 255
# op type -> (activation input, weight input, activation zero point, weight zero point)
_INTEGER_MATMULS = {"MatMulInteger": (0, 1, 2, 3), "QLinearMatMul": (0, 3, 2, 5), "QGemm": (0, 3, 2, 5)}


@dataclass(frozen=True)
class IntegerMatMul:
    """One integer matrix product of a quantized ONNX graph: ``(M, K) activation @ (K, N) weight``."""

    node: str
    activation: str  # the tensor name of the quantized activation input
    weight: np.ndarray  # (K, N) int8 or uint8
    gathered: bool = False  # the weight is a table whose rows a Gather picks per input (an embedding bag)

    @property
    def saturates_avx2(self) -> bool:
        """Whether some u8 activation pair can overflow int16 with these weights (u8 x s8 only)."""
        return self.weight.dtype == np.int8 and worst_pair_sum(self.weight) > INT16_MAX


def worst_pair_sum(weight: np.ndarray) -> int:
    """The largest ``|a0*w0 + a1*w1|`` any u8 activations can give with s8 ``weight``.

    >>> worst_pair_sum(np.array([[127], [-128]], dtype=np.int8))
    65280
    >>> worst_pair_sum(np.array([[64], [-64]], dtype=np.int8)) <= INT16_MAX
    True
    """
    return 2 * U8_MAX * int(np.abs(weight.astype(np.int32)).max(initial=0))


def integer_matmuls(model: onnx.ModelProto) -> list[IntegerMatMul]:
    """Every ``MatMulInteger`` / ``QLinearMatMul`` / ``QGemm`` with a constant weight (or rows gathered from a
    constant table), in graph order."""
    initializers = {init.name: init for init in model.graph.initializer}
    found = []
    gathers = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    gathers = {out: table for out, table in gathers.items() if table in initializers}
    for node in model.graph.node:
        if node.op_type in _INTEGER_MATMULS:
            a, b, _, _ = _INTEGER_MATMULS[node.op_type]
            gathered = node.input[b] in gathers  # a sparse-input bag: pairs of terms meet rows of the same table
            weight = numpy_helper.to_array(initializers[gathers.get(node.input[b], node.input[b])])
            if any(attr.name == "transB" and attr.i for attr in node.attribute):
                weight = weight.T  # QGemm stores (N, K)
            found.append(IntegerMatMul(node.name or node.output[0], node.input[a], weight, gathered))
    return found


def avx2_u8s8_matmul(a: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``a @ w`` for ``(M, K)`` uint8 ``a`` and ``(K, N)`` int8 ``w`` as ``vpmaddubsw`` computes it.

    Adjacent products are summed in pairs and clamped to int16, then the pairs add up in int32.

    >>> a = np.array([[255, 255]], dtype=np.uint8)
    >>> avx2_u8s8_matmul(a, np.array([[127], [127]], dtype=np.int8)).item()  # exact: 64770
    32767
    >>> avx2_u8s8_matmul(a, np.array([[64], [64]], dtype=np.int8)).item()
    32640
    """
    k = a.shape[1]
    if k % 2:  # the kernel pads K with zeros to whole pairs
        a, w = np.pad(a, ((0, 0), (0, 1))), np.pad(w, ((0, 1), (0, 0)))
    a32 = a.astype(np.int32).reshape(a.shape[0], -1, 2)  # (M, K/2, 2)
    w32 = w.astype(np.int32).reshape(-1, 2, w.shape[1])  # (K/2, 2, N)
    out = np.zeros((a.shape[0], w.shape[1]), dtype=np.int64)
    for m in range(a.shape[0]):  # one row at a time keeps the (K/2, N) pair sums small
        pairs = a32[m, :, 0, None] * w32[:, 0, :] + a32[m, :, 1, None] * w32[:, 1, :]  # (K/2, N)
        out[m] = np.clip(pairs, INT16_MIN, INT16_MAX).sum(axis=0)
    return out


def avx2_saturation(model_bytes: bytes, inputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Run ``model_bytes`` on ``inputs`` and replay each u8 x s8 product with AVX2 arithmetic.

    Returns per integer matmul the share of int16 pair sums that saturate, keyed by node name
    (u8 x u8 products are exact on every x86 kernel and report 0). An embedding bag's product (rows gathered
    per input) is not replayed: :func:`worst_pair_sum` of its table bounds it.
    """
    import onnxruntime as ort  # only needed here; the inspection above works without it

    model = onnx.load_from_string(model_bytes)
    matmuls = [matmul for matmul in integer_matmuls(model) if not matmul.gathered]
    graph_outputs = {output.name for output in model.graph.output}
    for matmul in matmuls:
        if matmul.activation not in graph_outputs:  # expose the quantized activation
            model.graph.output.append(
                onnx.helper.make_tensor_value_info(matmul.activation, onnx.TensorProto.UINT8, None)
            )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [m.activation for m in matmuls]
    if not names:
        return {}
    activations = dict(zip(names, session.run(names, inputs), strict=True))
    shares = {}
    for matmul in matmuls:
        a = activations[matmul.activation].reshape(-1, matmul.weight.shape[0])  # (M, K)
        if matmul.weight.dtype != np.int8 or a.dtype != np.uint8:
            shares[matmul.node] = 0.0
            continue
        exact = a.astype(np.int64) @ matmul.weight.astype(np.int64)
        shares[matmul.node] = float(np.mean(avx2_u8s8_matmul(a, matmul.weight) != exact))
    return shares
