"""The decision after measuring: rows over the accuracy budget get a per-layer sensitivity table and a
measured ``+fallback`` row; one row is recommended on the objective; report files and TensorBoard say so."""

from __future__ import annotations

import json

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import PostTrainingQuantization
from cli import main
from datamodules import TextDataModule
from quantization import METHODS, QuantizationData, load_artifact
from quantization.decide.decision import Budget
from quantization.measure.rows import MeasureSettings
from quantization.pipeline import quantization_report
from quantization.ship.bundle import load_bundle
from tests.helpers import blobs_mlp, checkpoint_callback_args, cli_error, mnist_args, text_args, write_text_corpus

FAST = MeasureSettings(latency_batch_sizes=(1, 64), min_run_time_s=0.005)


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    net, test, val = blobs_mlp(2, 3000, 1000, 1000)
    folder = tmp_path_factory.mktemp("report")
    methods = {
        "int2_weight_only": METHODS["int2_weight_only"].make_settings({"group_size": None}),
        "onnx_dynamic_int8": None,
        "weight_only_int8": None,
    }
    rows, decision = quantization_report(
        net, methods, test, QuantizationData(example=test[0][0][:1]), folder, FAST, val_batches=val,
        budget=Budget(max_accuracy_drop=2.5, objective="size"),
    )  # fmt: skip
    return net, rows, decision, folder


def test_a_method_over_budget_gets_sensitivity_and_a_measured_fallback_row(report):
    _, rows, decision, _ = report
    by_name = {row["method"]: row for row in rows}
    assert by_name["int2_weight_only"]["val_accuracy_delta"] < -2.5  # 2-bit per channel: over budget (-4.9)
    entry = decision["sensitivity"]["int2_weight_only"]
    assert [layer["layer"] for layer in entry["layers"]] == ["0", "2", "4"]
    assert all(layer["sqnr_db"] < 40 for layer in entry["layers"])  # 2 bits on any layer is audible in the logits
    fallback, row = entry["fallback"], by_name["int2_weight_only+fallback"]
    assert fallback["fits"]  # the head alone in fp32 gives back 2.9 of the 4.9 points
    assert [r["method"] for r in rows].index("int2_weight_only+fallback") == 2  # right after its method
    assert row["kept_fp32"] == fallback["keep_fp32"] and 0 < len(row["kept_fp32"]) < 3
    assert row["val_accuracy_delta"] == pytest.approx(-fallback["accuracy_drop"], abs=1e-9)
    assert row["val_accuracy_delta"] >= -2.5 and row["base_method"] == "int2_weight_only"
    assert by_name["int2_weight_only"]["size_bytes"] < row["size_bytes"] < by_name["fp32"]["size_bytes"]


def test_the_recommendation_is_the_smallest_row_within_budget(report):
    _, rows, decision, _ = report
    rec = decision["recommendation"]
    within = [r for r in rows if r["val_accuracy_delta"] >= -2.5 - 1e-9]
    assert rec["method"] == min(within, key=lambda r: r["size_bytes"])["method"] != "fp32"
    assert rec["objective"] == "size" and rec["method"] in rec["reason"]
    assert {r["method"] for r in rec["runners_up"]} == {r["method"] for r in rows} - {rec["method"]}


def test_report_files_carry_the_decision(report):
    _, rows, decision, folder = report
    saved = json.loads((folder / "report.json").read_text())
    assert saved["recommendation"]["method"] == decision["recommendation"]["method"]
    assert set(saved["sensitivity"]) == {"int2_weight_only"}
    markdown = (folder / "report.md").read_text()
    assert f"## Recommended: {decision['recommendation']['method']}" in markdown
    assert "## Per-layer sensitivity: int2_weight_only" in markdown and "| 4 | 640 |" in markdown
    assert all((folder / row["artifact"]).is_file() for row in rows)


def test_no_budget_no_decision(tmp_path):
    net, test, _ = blobs_mlp(2, 3000, 1000, 1000)
    _, decision = quantization_report(net, {"fp16": None}, test, QuantizationData(test[0][0][:1]), tmp_path, FAST)
    assert decision is None and "recommendation" not in json.loads((tmp_path / "report.json").read_text())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"objective": "latency_bs64"}, r"size, memory, accuracy or latency_bs<N>, N a measured batch size \(1, 256\)"),
        ({"objective": "speed"}, r"`objective` to be size, memory, accuracy, latency_bs1 or latency_bs<N>"),
        ({"max_bytes": 0}, r"`max_bytes` an integer number of bytes >= 1 \(e.g. 460800 for 450 KB\) or null, got 0"),
        ({"max_accuracy_drop": -0.5}, r"max_accuracy_drop"),
        ({"methods": ["fp16"], "sensitivity": ["int2_weight_only"]}, r"`sensitivity` among .* \(fp16\), got 'int2_"),
        ({"sensitivity": ["fp32"]}, r"Expected `sensitivity` among the configured quantization methods .*got 'fp32'"),
    ],
    ids=["unmeasured-batch", "unknown", "max-bytes", "negative", "not-configured", "fp32"],
)
def test_budget_and_objective_are_validated(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PostTrainingQuantization(**kwargs)


@pytest.mark.slow
def test_fit_writes_a_bundle_of_the_recommendation_and_times_it_end_to_end(tmp_path):
    corpus = write_text_corpus(tmp_path / "corpus.csv", n=160)
    quant = [
        "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[onnx_dynamic_int8]",
        "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.01",
        "--trainer.callbacks.max_accuracy_drop=100", "--trainer.callbacks.objective=size",
    ]  # fmt: skip
    assert main(["fit", *text_args(corpus, tmp_path, "--trainer.max_epochs", "2"), *quant]) is None
    folder = tmp_path / "text_mlp" / "version_0" / "quantization"
    report = json.loads((folder / "report.json").read_text())
    assert report["recommendation"]["method"] == "onnx_dynamic_int8"  # 4x smaller, and any loss is within 100 points
    deployment = report["deployment"]
    assert deployment["bundle"] == str(folder / "bundle") and deployment["method"] == "onnx_dynamic_int8"
    assert set(deployment["end_to_end"]) == {"fp32 checkpoint", "bundle: onnx_dynamic_int8"}
    assert "## End to end: raw input to label" in (folder / "report.md").read_text()
    row = next(r for r in report["methods"] if r["method"] == "onnx_dynamic_int8")
    assert row["sparse_input"] is True and row["bag_rows"] == "int8" and 0 < row["memory_bytes"] < row["size_bytes"]
    footprint = deployment["footprint"]  # a fresh process: numpy and ONNX Runtime, no torch
    assert footprint["loader"] == "runtime" and footprint["heavy_modules"] == [] and footprint["peak_rss_bytes"] > 0
    assert json.loads((folder / "bundle" / "model_card.json").read_text())["footprint"] == footprint
    events = EventAccumulator(str(tmp_path / "text_mlp" / "version_0"), size_guidance={"scalars": 0})
    events.Reload()
    assert {"quant/bundle/peak_rss_bytes", "quant/bundle/import_load_s"} <= set(events.Tags()["scalars"])

    # The bundle, from raw texts, labels the test split as the report's artifact does in process.
    dm = TextDataModule(path=str(corpus), max_features=None)
    dm.load_state_dict(torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["TextDataModule"])
    texts = dm.raw_test_inputs()
    runner = load_artifact(folder / "onnx_dynamic_int8.onnx")
    expected = [dm.classes[i] for i in runner.logits(dm.featurize_raw(texts).to_dense()).argmax(1).tolist()]
    assert load_bundle(folder / "bundle").predict(texts) == expected


@pytest.mark.slow
def test_quantize_takes_its_own_budget_and_objective(mnist_root, tmp_path, capsys):
    quant = [
        "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[fp16]",
        "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.01",
    ]  # fmt: skip
    args = mnist_args(mnist_root, tmp_path, *checkpoint_callback_args(tmp_path), *quant)
    assert main(["fit", *args, "--trainer.max_epochs", "1", "--test_after_fit", "false"]) is None
    best = str(tmp_path / "ckpt" / "best.ckpt")
    assert main(["quantize", *args, "--ckpt_path", best, "--objective", "size", "--max_accuracy_drop", "100"]) is None
    report = json.loads((tmp_path / "mnist_logistic" / "version_1" / "quantization" / "report.json").read_text())
    assert report["recommendation"]["objective"] == "size" and report["recommendation"]["method"] == "fp16"
    err = cli_error(capsys, "quantize", *args, "--ckpt_path", best, "--objective", "latency_bs64")
    assert err.splitlines()[-1] == (
        "error: Expected `objective` to be size, memory, accuracy or latency_bs<N>, N a measured batch size (1), "
        "got 'latency_bs64'."
    )


def test_the_default_objective_is_latency_at_the_smallest_measured_batch():
    assert PostTrainingQuantization(latency_batch_sizes=[256, 64]).budget.objective == "latency_bs64"
    assert PostTrainingQuantization().budget.objective == "latency_bs1"
