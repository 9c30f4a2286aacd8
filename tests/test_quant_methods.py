"""Every registered method on small models: close to fp32, smaller files, weights-only artifacts,
and models that are not a flat Linear stack."""

from __future__ import annotations

import dataclasses
import sys
import warnings

import pytest
import torch
from torch import nn

from quantization import (
    METHODS,
    QuantizationData,
    check_methods,
    check_quantizable,
    load_artifact,
    quantize,
    save_artifact,
)
from quantization.measure.accuracy import OnePerCall, one_per_call, predict
from quantization.measure.rows import MeasureSettings, latency_inputs, measure_methods, time_calls
from quantization.registry import default_methods, dense_only_methods
from tests.helpers import ResidualNet

INT8 = [name for name in METHODS if "int8" in name]


def tiny_net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Dropout(0.1), nn.Linear(96, 4)).eval()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(32, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def data(inputs) -> QuantizationData:
    return QuantizationData(example=inputs[:1], calibration=[inputs[:16], inputs[16:]])


def relative_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float((logits - reference).abs().max() / reference.abs().max())


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
@pytest.mark.parametrize("make", [tiny_net, ResidualNet], ids=["flat", "residual"])
def test_method_close_to_fp32_and_smaller(method, make, inputs, data):
    model = make().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    artifact = quantize(model, method, data)
    with torch.no_grad():
        reference = model(inputs)  # (32, 4)
    logits = METHODS[method].load(artifact.data, model, 1).logits(inputs)

    assert logits.shape == reference.shape and logits.dtype == torch.float32
    error = relative_error(logits, reference)
    assert error <= METHODS[method].max_relative_error, f"{method}: relative error {error:.4f}"
    fp32_size = quantize(model, "fp32", data).size_bytes
    if method in INT8:  # int8 weights are 1/4 of fp32; fp32 biases, norms and graph overhead stay
        assert artifact.size_bytes < fp32_size / (2.5 if make is tiny_net else 2.0)
    elif method != "fp32":
        assert artifact.size_bytes < fp32_size
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the model was only read


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
def test_artifact_round_trip_gives_identical_predictions(method, inputs, data, tmp_path):
    artifact = quantize(tiny_net(), method, data)
    path = save_artifact(artifact, tmp_path)
    if path.suffix == ".pt":
        payload = torch.load(path, weights_only=True)  # plain tensors and data, no code
        assert payload["method"] == method
    measured = METHODS[method].load(artifact.data, tiny_net(), 1).logits(inputs)
    assert torch.equal(load_artifact(path).logits(inputs), measured)  # a flat net loads with no model at hand


def test_non_sequential_pt_artifact_needs_its_model(data, inputs, tmp_path):
    model = ResidualNet().eval()
    path = save_artifact(quantize(model, "weight_only_int8", data), tmp_path)
    with pytest.raises(ValueError, match=r"not a plain nn.Sequential .*load_artifact\(path, model=\.\.\.\)"):
        load_artifact(path)
    runner = load_artifact(path, model=ResidualNet())  # the structure only: its own weights are not used
    assert (
        relative_error(runner.logits(inputs), model(inputs).detach()) <= METHODS["weight_only_int8"].max_relative_error
    )


def test_model_without_linear_layers_is_refused_in_one_line():
    with pytest.raises(ValueError, match=r"Method `fp32` cannot quantize this model: Conv1d has no nn.Linear layer"):
        check_quantizable(nn.Conv1d(2, 2, 3), ["dynamic_int8"])


def test_fixed_scale_reports_saturated_fraction():
    net = nn.Linear(4, 2)
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[0.5, 1.5, -0.25, -2.0], [0.0, 0.1, 0.2, 0.3]]))
        net.bias.copy_(torch.tensor([0.0, 3.0]))
    artifact = quantize(net, "fixed_scale_int8", QuantizationData(torch.zeros(1, 4)), {"bits": 7})
    # 1.5, -2.0 and 3.0 fall outside [-128, 127] / 128: 3 of 10 values saturate.
    assert artifact.info["saturated_fraction"] == pytest.approx(0.3)
    logits = METHODS["fixed_scale_int8"].load(artifact.data, None, 1).logits(torch.eye(4))
    expected = torch.tensor([[0.5, 127 / 128, -0.25, -1.0], [0.0, 13 / 128, 26 / 128, 38 / 128]]).T + torch.tensor(
        [0.0, 127 / 128]
    )
    torch.testing.assert_close(logits, expected)


def test_unknown_method_is_rejected_with_the_known_ones():
    with pytest.raises(ValueError, match=r"Expected `methods` to be a list of \(.*fp32.*\), got 'int3'"):
        check_methods(["dynamic_int8", "int3"])
    with pytest.raises(ValueError, match="got 'fp16'"):
        check_methods("fp16")


@pytest.mark.parametrize(
    ("method", "settings", "match"),
    [
        ("fixed_scale_int8", {"bits": 20}, r"Expected `settings.fixed_scale_int8.bits` in \[0, 14\], got 20"),
        ("fixed_scale_int8", {"bitz": 7}, r"Expected `settings.fixed_scale_int8` keys in \(bits\), got 'bitz'"),
        ("onnx_static_int8", {"weights": "int4"}, r"Expected `weights` in \(int7, uint8, int8\), got 'int4'"),
        ("onnx_static_int8", {"calibration": "mse"}, r"Expected `calibration` in \(minmax, percentile, entropy\)"),
    ],
    ids=["value", "key", "choice", "calibration"],
)
def test_method_settings_are_validated(method, settings, match, data):
    with pytest.raises(ValueError, match=match):
        quantize(tiny_net(), method, data, settings)


@pytest.mark.parametrize("calibration", ["minmax", "percentile", "entropy"])
def test_static_onnx_calibration_choices(calibration, inputs, data):
    net = tiny_net()
    artifact = quantize(net, "onnx_static_int8", data, {"calibration": calibration})
    logits = METHODS["onnx_static_int8"].load(artifact.data, net, 1).logits(inputs)
    assert relative_error(logits, net(inputs).detach()) <= METHODS["onnx_static_int8"].max_relative_error


def test_static_onnx_calibrates_on_sparse_batches_as_on_their_dense_form(inputs, data):
    """Sparse term-weight batches (a text run's) are kept sparse and made dense one at a time as they are read:
    the artifact is the same, byte for byte."""
    terms = inputs.relu()  # zeros to leave out, as a TF-IDF row has
    dense_data = QuantizationData(example=terms[:1], calibration=[terms[:16], terms[16:]], sparse_input=True)
    sparse_data = dataclasses.replace(dense_data, calibration=[x.to_sparse() for x in dense_data.calibration])
    net = tiny_net()
    assert quantize(net, "onnx_static_int8", sparse_data).data == quantize(net, "onnx_static_int8", dense_data).data


def test_static_onnx_needs_calibration(inputs):
    with pytest.raises(ValueError, match="needs calibration batches"):
        quantize(tiny_net(), "onnx_static_int8", QuantizationData(example=inputs[:1]))


def test_dynamic_int8_says_what_to_use_when_torch_ao_is_gone(monkeypatch, data):
    monkeypatch.setitem(sys.modules, "torch.ao.quantization", None)
    with pytest.raises(RuntimeError, match=r"no longer has\. Use `onnx_dynamic_int8` or `weight_only_int8`"):
        quantize(tiny_net(), "dynamic_int8", data)


def test_dynamic_int8_matches_torch_quantize_dynamic(inputs, data):
    net = tiny_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation, deliberately
        reference = torch.ao.quantization.quantize_dynamic(net, {nn.Linear}, dtype=torch.qint8)(inputs)
    artifact = quantize(net, "dynamic_int8", data)
    assert torch.equal(METHODS["dynamic_int8"].load(artifact.data, net, 1).logits(inputs), reference)


def test_measure_methods_rows(inputs, data):
    batches = [(inputs[:16], torch.arange(16) % 4), (inputs[16:], torch.arange(16) % 4)]
    settings = MeasureSettings(latency_batch_sizes=(1, 40), num_threads=1, min_run_time_s=0.005)
    methods = {"onnx_dynamic_int8": None, "fp16": None}
    rows, artifacts = measure_methods(tiny_net(), methods, batches, data, settings)
    assert [row["method"] for row in rows] == ["fp32", "onnx_dynamic_int8", "fp16"]
    assert [a.method for a in artifacts] == ["fp32", "onnx_dynamic_int8", "fp16"]
    fp32 = rows[0]
    assert fp32["agreement"] == 1.0 and fp32["accuracy_delta"] == 0.0 and fp32["size_ratio"] == 1.0
    assert fp32["timed_as"] == "onnx" and "timed_as" not in rows[1]  # fp32 timed as a bundle ships it
    # Activations quantized per call: evaluated one example a call, as requests are served.
    assert rows[1]["evaluated_batch_size"] == 1 and "evaluated_batch_size" not in rows[2]
    runner = METHODS["onnx_dynamic_int8"].load(artifacts[1].data, None, 1)
    assert rows[1]["accuracy"] == predict(runner, one_per_call(batches))[1]
    assert rows[1]["settings"] == {"weights": "int7", "per_channel": True} and fp32["settings"] == {}
    for row in rows:
        assert set(row["latency_ms"]) == {"1", "40"} and row["threads"] == 1
        assert all(t["p90"] >= t["median"] > 0 and t["calls"] >= 10 for t in row["latency_ms"].values())
        assert row["slower_than_fp32"] == [int(n) for n, s in row["speedup"].items() if s < 1]


def test_sparse_batches_give_the_dense_figures(inputs, data):
    labels = torch.arange(16) % 4
    dense_batches = [(inputs[:16], labels), (inputs[16:], labels)]
    sparse_batches = [(x.to_sparse(), y) for x, y in dense_batches]  # COO, as the text datamodule serves
    settings = MeasureSettings(latency_batch_sizes=(2,), num_threads=1, min_run_time_s=0.005)
    methods = {"onnx_dynamic_int8": None, "weight_only_int8": None}
    sparse_rows, _ = measure_methods(tiny_net(), methods, sparse_batches, data, settings)
    dense_rows, _ = measure_methods(tiny_net(), methods, dense_batches, data, settings)
    assert [r["accuracy"] for r in sparse_rows] == [r["accuracy"] for r in dense_rows]
    assert [r["agreement"] for r in sparse_rows] == [r["agreement"] for r in dense_rows]


def test_latency_inputs_repeat_rows_when_short():
    features = torch.arange(6.0).view(3, 2)
    inputs = latency_inputs(features, [1, 5])
    assert inputs[1].tolist() == [[0.0, 1.0]]
    assert inputs[5][:, 0].tolist() == [0.0, 2.0, 4.0, 0.0, 2.0]


def test_time_calls_restores_thread_count(inputs, data):
    artifact = quantize(tiny_net(), "fp32", data)
    threads = torch.get_num_threads()
    runner = METHODS["fp32"].load(artifact.data, None, 1)
    timing = time_calls(runner, inputs[:1], num_threads=1, min_run_time_s=0.005)
    assert timing["median"] > 0
    assert torch.get_num_threads() == threads


def test_text_default_keeps_the_methods_whose_artifact_reads_term_bags(inputs, data):
    # What the registry says of each method is what its loaded artifact does when fed a text's term bag.
    sparse = dataclasses.replace(data, sparse_input=True)
    for name in default_methods():
        artifact = quantize(tiny_net(), name, sparse)
        runner = METHODS[name].load(artifact.data, tiny_net(), 1)
        assert runner.sparse_input == METHODS[name].reads_term_bags, name
    assert dense_only_methods() == ["bf16", "dynamic_int8", "fixed_scale_int8", "fp16", "weight_only_int8"]
    assert set(default_methods(term_bags=True)) == set(default_methods()) - set(dense_only_methods())


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "term bags"])
def test_one_per_call_gives_the_logits_of_each_example_run_alone(inputs, data, sparse):
    # A per-call activation scale: each example's logits depend on the call, so the per-example path must be exact.
    x = inputs.clone()
    x[3] = 0.0  # a text with no known term
    x[5, 10:] = 0.0  # a short one
    artifact = quantize(tiny_net(), "onnx_dynamic_int8", dataclasses.replace(data, sparse_input=sparse))
    runner = METHODS["onnx_dynamic_int8"].load(artifact.data, None, 1)
    assert runner.sparse_input == sparse
    batch = x.to_sparse() if sparse else x
    alone = torch.cat([runner.logits(one) for one, _ in one_per_call([(batch, torch.zeros(32))])])
    assert torch.equal(OnePerCall(runner).logits(batch), alone)
    assert not torch.equal(runner.logits(batch), alone)  # one call for the batch: another scale, other logits


def test_an_export_is_reused_only_for_the_same_unchanged_model(inputs):
    from quantization.artifacts.onnx_runtime import export_onnx

    net = tiny_net()
    first = export_onnx(net, inputs[:1])
    assert export_onnx(net, inputs[:1]) is first  # the report exports one model for several methods
    assert export_onnx(tiny_net(), inputs[:1]) is not first  # an equal copy is another model: exported anew
    with torch.no_grad():
        net[0].weight[0, 0] += 1.0  # changed in place
    changed = export_onnx(net, inputs[:1])
    assert changed != first
    net[0].weight = nn.Parameter(net[0].weight.detach().clone())  # a tensor replaced
    assert export_onnx(net, inputs[:1]) is not changed
    from quantization.artifacts import onnx_runtime

    kept = len(onnx_runtime._EXPORTS)
    del net  # its exports go with it
    assert len(onnx_runtime._EXPORTS) < kept
