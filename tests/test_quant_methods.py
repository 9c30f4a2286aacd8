"""Quantization methods on a tiny net: outputs close to fp32, smaller files, weights-only artifacts."""

from __future__ import annotations

import sys
import warnings

import pytest
import torch
from torch import nn

from callbacks import load_artifact
from callbacks.quant_artifacts import runner_from_bytes, save_artifact
from callbacks.quant_measure import MeasureSettings, latency_inputs, measure_methods, time_calls
from callbacks.quant_methods import METHODS, check_methods, quantize
from callbacks.quant_torch import QuantOptions, encode_net
from callbacks.quantization import MethodName, PostTrainingQuantization
from tests.helpers import TOLERANCE

INT8 = [name for name in METHODS if "int8" in name]


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Dropout(0.1), nn.Linear(96, 4)).eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(32, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def options(inputs) -> QuantOptions:
    return QuantOptions(calibration=[inputs[:16], inputs[16:]])


def test_every_method_has_a_tolerance_and_a_config_name():
    assert set(TOLERANCE) == set(METHODS)
    assert set(MethodName.__args__) == set(METHODS)


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_method_close_to_fp32_and_smaller(method, inputs, options):
    net = tiny_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    artifact = quantize(net, method, options)
    reference = net(inputs)  # (32, 4)
    logits = runner_from_bytes(artifact.data, artifact.suffix).logits(inputs)

    assert logits.shape == reference.shape and logits.dtype == torch.float32
    error = (logits - reference).abs().max() / reference.abs().max()
    assert error <= TOLERANCE[method], f"{method}: relative error {error:.4f}"
    fp32_size = quantize(net, "fp32", options).size_bytes
    if method in INT8:
        assert artifact.size_bytes < fp32_size / 2.5
    elif method != "fp32":
        assert artifact.size_bytes < fp32_size
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())  # the net was only read


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_artifact_round_trip_gives_identical_predictions(method, inputs, options, tmp_path):
    artifact = quantize(tiny_net(), method, options)
    path = save_artifact(artifact, tmp_path)
    if path.suffix == ".pt":
        payload = torch.load(path, weights_only=True)  # plain tensors and data, no code
        assert payload["method"] == method
    measured = runner_from_bytes(artifact.data, artifact.suffix).logits(inputs)
    assert torch.equal(load_artifact(path).logits(inputs), measured)


def test_fixed_scale_reports_saturated_fraction():
    net = nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, 1.5, -0.25, -2.0], [0.0, 0.1, 0.2, 0.3]]))
        net.bias.copy_(torch.tensor([0.0, 3.0]))
    data, info = encode_net(net, QuantOptions(fixed_scale_bits=7), "fixed_scale_int8")
    # 1.5, -2.0 and 3.0 fall outside [-128, 127] / 128: 3 of 10 values saturate.
    assert info["saturated_fraction"] == pytest.approx(0.3)
    logits = runner_from_bytes(data, ".pt").logits(torch.eye(4))
    expected = torch.tensor([[0.5, 127 / 128, -0.25, -1.0], [0.0, 13 / 128, 26 / 128, 38 / 128]]).T + torch.tensor(
        [0.0, 127 / 128]
    )
    torch.testing.assert_close(logits, expected)


def test_unknown_method_is_rejected_with_the_known_ones():
    with pytest.raises(
        ValueError, match=r"Expected `methods` to be a list of \(fp32, .*onnx_static_int8\), got 'int3'"
    ):
        check_methods(["dynamic_int8", "int3"])
    with pytest.raises(ValueError, match="got 'fp16'"):
        check_methods("fp16")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"methods": ["int3"]}, "Expected `methods`"),
        ({"latency_batch_sizes": [0]}, "Expected `latency_batch_sizes`"),
        ({"num_threads": 0}, "Expected `num_threads`"),
        ({"min_run_time_s": 0.0}, "Expected `min_run_time_s`"),
        ({"calibration_batches": 0}, "Expected `calibration_batches`"),
        ({"fixed_scale_bits": 20}, "Expected `fixed_scale_bits`"),
    ],
    ids=["methods", "batch_sizes", "threads", "run_time", "calibration", "bits"],
)
def test_callback_validates_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PostTrainingQuantization(**kwargs)


def test_unsupported_layer_is_named():
    net = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4))
    with pytest.raises(ValueError, match=r"found LayerNorm at `net\.1`"):
        quantize(net, "fp16", QuantOptions())


def test_static_onnx_needs_calibration():
    with pytest.raises(ValueError, match="needs calibration batches"):
        quantize(tiny_net(), "onnx_static_int8", QuantOptions())


def test_dynamic_int8_says_what_to_use_when_torch_ao_is_gone(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)
    with pytest.raises(RuntimeError, match=r"no longer has\. Use `onnx_dynamic_int8` or `weight_only_int8`"):
        quantize(tiny_net(), "dynamic_int8", QuantOptions())


def test_dynamic_int8_matches_torch_quantize_dynamic(inputs):
    net = tiny_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation, deliberately
        reference = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)(inputs)
    artifact = quantize(net, "dynamic_int8", QuantOptions())
    assert torch.equal(runner_from_bytes(artifact.data, artifact.suffix).logits(inputs), reference)


def test_measure_methods_rows(inputs, options):
    batches = [(inputs[:16], torch.arange(16) % 4), (inputs[16:], torch.arange(16) % 4)]
    settings = MeasureSettings(latency_batch_sizes=(1, 40), num_threads=1, min_run_time_s=0.005)
    rows, artifacts = measure_methods(tiny_net(), ["onnx_dynamic_int8", "fp16"], batches, settings, options)
    assert [row["method"] for row in rows] == ["fp32", "onnx_dynamic_int8", "fp16"]
    assert [a.method for a in artifacts] == ["fp32", "onnx_dynamic_int8", "fp16"]
    fp32 = rows[0]
    assert fp32["agreement"] == 1.0 and fp32["accuracy_delta"] == 0.0 and fp32["size_ratio"] == 1.0
    for row in rows:
        assert set(row["latency_ms"]) == {"1", "40"} and row["threads"] == 1
        assert all(t["p90"] >= t["median"] > 0 for t in row["latency_ms"].values())
        assert row["slower_than_fp32"] == [int(n) for n, s in row["speedup"].items() if s < 1]


def test_sparse_batches_are_measured_dense(inputs, options):
    labels = torch.arange(16) % 4
    dense_batches = [(inputs[:16], labels), (inputs[16:], labels)]
    sparse_batches = [(x.to_sparse(), y) for x, y in dense_batches]  # COO, as the text datamodule serves
    settings = MeasureSettings(latency_batch_sizes=(2,), num_threads=1, min_run_time_s=0.005)
    sparse_rows, _ = measure_methods(tiny_net(), ["onnx_dynamic_int8"], sparse_batches, settings, options)
    dense_rows, _ = measure_methods(tiny_net(), ["onnx_dynamic_int8"], dense_batches, settings, options)
    assert [r["accuracy"] for r in sparse_rows] == [r["accuracy"] for r in dense_rows]
    assert [r["agreement"] for r in sparse_rows] == [r["agreement"] for r in dense_rows]


def test_latency_inputs_repeat_rows_when_short():
    features = torch.arange(6.0).view(3, 2)
    inputs = latency_inputs(features, [1, 5])
    assert inputs[1].tolist() == [[0.0, 1.0]]
    assert inputs[5][:, 0].tolist() == [0.0, 2.0, 4.0, 0.0, 2.0]


def test_time_calls_restores_thread_count(inputs):
    artifact = quantize(tiny_net(), "fp32", QuantOptions())
    threads = torch.get_num_threads()
    runner = runner_from_bytes(artifact.data, artifact.suffix)
    timing = time_calls(runner, inputs[:1], num_threads=1, min_run_time_s=0.005)
    assert timing["median"] > 0
    assert torch.get_num_threads() == threads
