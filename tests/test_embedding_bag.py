"""Sparse-input artifacts: the first Linear over term weights as an embedding bag. Per method, the logits equal
the dense artifact's within the method's stated error; int8 bags hold the dense artifact's codes and compute its
integers."""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from quantization import METHODS, QuantizationData, quantize
from quantization.artifacts.bag_nodes import int4_rows
from runtime import OnnxModel
from tests.helpers import ResidualNet, tiny_text_model

# Methods whose artifact reads term ids and weights: the ONNX ones (rewritten graphs) and the torch ones whose
# first layer holds fp32 weights at run time (fp32, and the weight-only family that dequantizes at load).
SPARSE = {"onnx_dynamic_int8", "onnx_static_int8", "onnx_int4", "fp32", "intn_weight_only"}
SPARSE |= {f"int{b}_weight_only" for b in (2, 3, 4)}
FLOAT_ROUNDING = 1e-5  # fp32 sums of the same products in another order


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    dm, net, data = tiny_text_model(tmp_path_factory.mktemp("text"), hidden=32, sparse_input=True)
    dm.setup("test")
    return dm, net, data, list(dm.test_dataloader())


def relative_error(ours: torch.Tensor, reference: torch.Tensor) -> float:
    return float((ours - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_sparse_input_logits_equal_the_dense_artifacts(text, method):
    _, net, data, batches = text
    settings = {"block_size": 16} if method == "onnx_int4" else None  # two blocks per 32-wide row
    dense = quantize(net, method, dataclasses.replace(data, sparse_input=False), settings)
    sparse = quantize(net, method, data, settings)
    dense_runner = METHODS[method].load(dense.data, net, 1)
    sparse_runner = METHODS[method].load(sparse.data, net, 1)
    assert sparse_runner.sparse_input == (method in SPARSE)
    dense_logits = torch.cat([dense_runner.logits(x.to_dense()) for x, _ in batches])
    sparse_logits = torch.cat([sparse_runner.logits(x) for x, _ in batches])  # sparse COO batches, fed as they are
    assert relative_error(sparse_logits, dense_logits) <= max(METHODS[method].max_relative_error, FLOAT_ROUNDING)


@pytest.mark.parametrize("weights", ["int7", "uint8"])
@pytest.mark.parametrize("method", ["onnx_dynamic_int8", "onnx_static_int8"])
def test_int8_bags_compute_what_the_dense_artifact_computes(text, method, weights):
    """The term weights quantized as the dense graph quantizes its input, multiplied by the same codes in integers:
    the zeros of a dense row add nothing, so the logits are the dense artifact's (uint8 weights: zero points)."""
    _, net, data, batches = text
    dense = quantize(net, method, dataclasses.replace(data, sparse_input=False), {"weights": weights})
    sparse = quantize(net, method, data, {"weights": weights})
    dense_runner, sparse_runner = (METHODS[method].load(a.data, net, 1) for a in (dense, sparse))
    for x, _ in batches:
        ours, theirs = sparse_runner.logits(x), dense_runner.logits(x.to_dense())
        if method == "onnx_dynamic_int8":
            assert torch.equal(ours, theirs)  # the same integers, the same fp32 operations in the same order
        else:  # QGemm requantizes with its own fixed-point multiplier; here in fp32: a tie may round apart
            step = float(onnx_scale(sparse.data, "logits_scale"))
            assert (ours - theirs).abs().max() <= step * 1.0001


def onnx_scale(data: bytes, name: str) -> np.ndarray:
    return next(numpy_helper.to_array(i) for i in onnx.load_from_string(data).graph.initializer if i.name == name)


@pytest.mark.parametrize("method", ["onnx_dynamic_int8", "onnx_static_int8"])
def test_int8_rows_are_the_dense_artifacts_codes(text, method):
    _, net, data, _ = text
    dense = onnx.load_from_string(quantize(net, method, dataclasses.replace(data, sparse_input=False)).data)
    sparse = onnx.load_from_string(quantize(net, method, data).data)
    weights = {i.name: numpy_helper.to_array(i) for i in dense.graph.initializer if i.name.startswith("0.weight")}
    codes = next(array for name, array in weights.items() if name.endswith("_quantized"))  # (D, H) or (H, D)
    rows = next(numpy_helper.to_array(i) for i in sparse.graph.initializer if i.name == "bag.rows")
    assert rows.dtype == np.int8 and np.array_equal(rows, codes if codes.shape == rows.shape else codes.T)
    assert {i.name for i in sparse.graph.input} == {"ids", "weights"}
    assert {n.name for n in sparse.graph.node if n.op_type == "Gather"} == {"bag/Gather"}


def test_a_batch_gives_each_texts_logits_as_alone(text, tmp_path):
    """Padding shorter texts with weight-0 terms changes no sum: batch and batch-1 logits are equal, bit for bit."""
    _, net, data, batches = text
    model = OnnxModel(quantize(net, "onnx_static_int8", data).data)
    runner = METHODS["onnx_static_int8"].load(quantize(net, "onnx_static_int8", data).data, net, 1)
    x = batches[0][0]
    together = runner.logits(x)
    alone = torch.cat([runner.logits(x.index_select(0, torch.tensor([i]))) for i in range(x.shape[0])])
    assert torch.equal(together, alone)
    empty = model.logits(np.zeros((1, x.shape[1]), np.float32))  # a text with no known term: the bias path
    with torch.no_grad():
        fp32 = net(torch.zeros(1, x.shape[1])).numpy()
    assert np.allclose(empty, fp32, rtol=0.1, atol=0.1 * np.abs(fp32).max())


def test_a_first_layer_kept_in_fp32_gathers_fp32_rows(text):
    _, net, data, batches = text
    artifact = quantize(net, "onnx_static_int8", dataclasses.replace(data, keep_fp32=frozenset({"0"})))
    assert artifact.info["bag_rows"] == "fp32"
    runner = METHODS["onnx_static_int8"].load(artifact.data, net, 1)
    with torch.no_grad():
        reference = net(batches[0][0].to_dense())
    assert relative_error(runner.logits(batches[0][0]), reference) <= METHODS["onnx_static_int8"].max_relative_error


def test_a_model_whose_input_feeds_more_than_a_linear_stays_dense():
    net = ResidualNet().eval()  # its first Linear is not the first module of a Sequential
    artifact = quantize(net, "onnx_dynamic_int8", QuantizationData(torch.zeros(1, 64), sparse_input=True))
    assert "first layer is not an nn.Linear" in artifact.info["dense_input"]
    assert not METHODS["onnx_dynamic_int8"].load(artifact.data, net, 1).sparse_input


@pytest.mark.parametrize("symmetric", [True, False], ids=["symmetric", "asymmetric"])
def test_int4_rows_round_to_the_nearest_code(symmetric):
    weight = np.random.default_rng(0).normal(size=(40, 48)).astype(np.float32)  # 3 blocks of 16 per row
    rows = int4_rows(weight, None, block_size=16, symmetric=symmetric)
    codes = np.stack([rows.table & 15, rows.table >> 4], axis=-1).reshape(40, 48).astype(np.float32)
    zero = np.stack([rows.zero_point & 15, rows.zero_point >> 4], axis=-1).reshape(40, -1)[:, :3]
    values = (codes - np.repeat(zero, 16, axis=1)) * np.repeat(rows.scale, 16, axis=1)
    step = np.abs(np.repeat(rows.scale, 16, axis=1))
    error = np.abs(values - weight) / step
    clipped = codes == (15 if symmetric else -1)  # symmetric: the other sign's values past 7.5 steps clip at code 7
    assert (error[~clipped] <= 0.5 + 1e-5).all() and (error <= 1 + 1e-5).all()
    if symmetric:
        assert (zero == 8).all()


def test_an_int8_bag_never_saturates_avx2_pairs(text):
    """The bag multiplies u8 term weights by the int7 codes: the worst int16 pair sum stays below 32767."""
    from quantization.artifacts.int8_overflow import INT16_MAX, integer_matmuls, worst_pair_sum

    _, net, data, _ = text
    for weights, saturates in (("int7", False), ("int8", True)):
        model = onnx.load_from_string(quantize(net, "onnx_static_int8", data, {"weights": weights}).data)
        bag = next(m for m in integer_matmuls(model) if m.gathered)
        assert bag.weight.shape[0] == data.example.shape[1]  # the table: one row per term
        assert (worst_pair_sum(bag.weight) > INT16_MAX) == saturates == bag.saturates_avx2
