"""Vocabulary and hidden-unit pruning: the pruned featurizer equals the kept columns renormalized (and
scikit-learn's), a pruned copy computes what the full model computes on the kept terms and units, the importance
rules are what they say, and a text run's report carries fine-tuned pruned rows whose bundle predicts raw text with
the pruned vocabulary exactly as its report row measured, resumable after a kill."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch import nn

from callbacks import PostTrainingQuantization
from callbacks.prune_settings import PruneSettings, PruneSize
from callbacks.vocabulary_pruning import check_prunable, narrower, prunable, pruned_shape
from datamodules import MNISTDataModule, TextDataModule
from errors import ConfigError
from modules import MLP
from quantization.candidates.pruning import (
    first_layer,
    hidden_layer,
    input_importance,
    input_statistics,
    keep_top,
    prune_model,
    prune_preprocessing,
    select_columns,
    unit_importance,
)
from quantization.ship.bundle import load_bundle
from runtime import featurizer
from storage.checkpoints import load_net_weights
from tests.helpers import REPO, ResidualNet, checkpoint_callback_args, text_args, write_text_corpus

# One float32 rounding of the same float64 value on either side, and the float64 renormalization between.
TWO_ROUNDINGS = 2.0**-23 + 2.0**-40
VECTORIZERS = {
    "tfidf": {},
    "tfidf-bigrams-sublinear": {"ngram_range": (1, 2), "sublinear_tf": True},
    "count": {"vectorizer": "count"},
}


def text_data(folder: Path, **settings) -> TextDataModule:
    dm = TextDataModule(str(write_text_corpus(folder / "corpus.csv", n=120)), max_features=None, **settings)
    dm.setup("fit")
    return dm


@pytest.mark.parametrize("settings", list(VECTORIZERS.values()), ids=list(VECTORIZERS))
def test_the_pruned_featurizer_is_the_kept_columns_renormalized(tmp_path, settings):
    dm = text_data(tmp_path, **settings)
    texts = [*dm.split_rows("test").texts, "", "car road", "unknown words only"]
    columns = torch.tensor(sorted(range(0, dm.input_dim, 3)))  # a third of the vocabulary
    pruned = featurizer(json.loads(json.dumps(prune_preprocessing(dm.preprocessing(), columns))))
    ours = pruned(texts)  # (N, K): what a bundle of a pruned model computes from raw text
    assert pruned.input_dim == len(columns)
    normalize = settings.get("vectorizer", "tfidf") == "tfidf"
    derived = select_columns(dm.featurize_raw(texts), columns, normalize).to_dense().numpy()  # what fine-tuning reads
    assert np.array_equal(ours != 0, derived != 0)
    assert (np.abs(ours.astype(np.float64) - derived) <= TWO_ROUNDINGS * np.abs(derived)).all()
    if normalize:  # a text whose kept terms are all its terms is unchanged; others gain weight
        assert np.allclose(np.linalg.norm(ours[ours.any(axis=1)], axis=1), 1.0, atol=1e-6)
    else:
        assert np.array_equal(ours, derived)  # counts: no norm, the same integers
    # scikit-learn's vectorizer restricted to the kept terms (their idf) gives the same vectors.
    vectorizer = dm.vectorizer
    terms = sorted(vectorizer.vocabulary_, key=vectorizer.vocabulary_.get)
    restricted = type(vectorizer)(**(vectorizer.get_params() | {"vocabulary": [terms[c] for c in columns]}))
    restricted.fit(["placeholder"])  # sets the fixed vocabulary; idf is replaced next
    if normalize:
        restricted.idf_ = vectorizer.idf_[columns.numpy()]
    assert np.array_equal(ours, restricted.transform(texts).toarray().astype(np.float32))


def test_a_pruned_copy_computes_the_full_model_on_the_kept_terms_and_units():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(40, 12), nn.ReLU(), nn.Dropout(0.5), nn.Linear(12, 3)).eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    columns, units = torch.tensor([1, 5, 6, 20, 39]), torch.tensor([0, 3, 4, 11])
    x = torch.zeros(8, 40)
    x[:, columns] = torch.rand(8, len(columns))  # texts of kept terms only
    small = prune_model(net, columns, units)
    assert [small[0].in_features, small[0].out_features, small[3].in_features] == [5, 4, 4]
    with torch.no_grad():
        hidden = torch.relu(net[0](x))[:, units]
        expected = hidden @ net[3].weight[:, units].T + net[3].bias
        assert torch.allclose(small(x[:, columns]), expected, atol=1e-6)
        assert torch.allclose(prune_model(net, columns)(x[:, columns]), net(x), atol=1e-6)  # terms only: the same
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())  # the source is only read
    linear = nn.Linear(40, 3).eval()  # a logistic regression: its one layer's columns
    assert torch.allclose(prune_model(linear, columns)(x[:, columns]), linear(x), atol=1e-6)


def test_importance_rules_and_statistics():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 2))
    batches = [torch.rand(5, 6) * (torch.rand(5, 6) > 0.5) for _ in range(3)]
    stats = input_statistics([b.to_sparse() for b in batches], 6)
    x = torch.cat(batches).double()
    assert torch.allclose(stats["mean_abs"], x.abs().mean(0)) and torch.allclose(stats["mean_square"], x.pow(2).mean(0))
    assert torch.equal(stats["frequency"], (x != 0).double().mean(0))
    norms = net[0].weight.detach().double().norm(dim=0)
    assert torch.equal(input_importance(net, stats, "weight"), norms)
    assert torch.allclose(input_importance(net, stats, "weight_x_input"), norms * x.abs().mean(0))
    assert torch.allclose(input_importance(net, stats, "weight_x_rms_input"), norms * x.pow(2).mean(0).sqrt())
    with torch.no_grad():
        activation = torch.relu(net[0](torch.cat(batches))).double().mean(0)
    expected = activation * net[2].weight.detach().double().norm(dim=0)
    assert torch.allclose(unit_importance(net, [b.to_sparse() for b in batches]), expected)
    with pytest.raises(ValueError, match=r"`importance` to be one of \(weight, weight_x_input, weight_x_rms_input"):
        input_importance(net, stats, "norm")


def test_keep_top_keeps_the_largest_in_column_order_ties_to_the_lower_index():
    scores = torch.tensor([0.3, 0.9, 0.3, 0.1, 0.9, 0.3])
    assert keep_top(scores, 3).tolist() == [0, 1, 4]
    assert keep_top(scores, 4).tolist() == [0, 1, 2, 4]
    with pytest.raises(ValueError, match=r"keep 1\.\.6 of 6, got 7"):
        keep_top(scores, 7)


@pytest.mark.parametrize(
    ("net", "call", "match"),
    [
        (ResidualNet(), first_layer, r"first layer is an nn.Linear over the input.*ResidualNet is not one"),
        (nn.Linear(4, 2), hidden_layer, r"Hidden-unit pruning needs an nn.Sequential.*Set `hidden` to null"),
        (nn.Sequential(nn.Linear(4, 3), nn.LayerNorm(3), nn.Linear(3, 2)), hidden_layer, r"elementwise layers"),
    ],
    ids=["not-a-linear-over-the-input", "no-hidden-layer", "units-mixed"],
)
def test_models_that_cannot_be_pruned_are_named(net, call, match):
    with pytest.raises(ValueError, match=match):
        call(net)


@pytest.mark.parametrize(
    ("prune", "match"),
    [
        (
            {"size": []},
            r"`prune` keys in \(sizes, methods, importance, epochs, lr_scale, examples_per_epoch\), got 'size'",
        ),
        ({"sizes": [2000]}, r"each of `prune.sizes` as \{terms: <int>, hidden: <int or null>, share: .*\}, got 2000"),
        ({"sizes": [{"terms": 9, "share": 2.0}]}, r"`prune.sizes\[\].share` a number between 0 and 1 or null, got 2.0"),
        ({"sizes": [{"terms": 0}]}, r"`prune.sizes\[\].terms` an integer >= 1 or a share .* between 0 and 1, got 0"),
        ({"sizes": [{"terms": 1.5}]}, r"`prune.sizes\[\].terms` an integer >= 1 or a share .*, got 1.5"),
        ({"sizes": [{"terms": 10, "hidden": 0}]}, r"`prune.sizes\[\].hidden` an integer >= 1 or null, got 0"),
        ({"importance": "norm"}, r"`prune.importance` to be one of \(weight, weight_x_input"),
        ({"methods": ["int9"]}, r"Expected `methods` to be a list of .* got 'int9'"),
        ({"epochs": 0}, r"`prune.epochs` an integer >= 1, got 0"),
        ({"lr_scale": 0}, r"`prune.lr_scale` > 0, got 0"),
        ({"examples_per_epoch": 0}, r"`prune.examples_per_epoch` an integer >= 1 or null, got 0"),
    ],
    ids=[
        "key",
        "size-not-a-mapping",
        "size-share",
        "terms",
        "share",
        "hidden",
        "importance",
        "method",
        "epochs",
        "lr_scale",
        "examples_per_epoch",
    ],
)
def test_prune_settings_are_validated(prune, match):
    with pytest.raises(ValueError, match=match):
        PostTrainingQuantization(prune=prune)


def test_pruned_models_take_their_own_methods_and_settings():
    callback = PostTrainingQuantization(
        methods=["fp16"], settings={"onnx_int4": {"block_size": 32}},
        prune={"sizes": [{"terms": 100, "hidden": 8}], "methods": ["onnx_int4"]},
    )  # fmt: skip
    assert list(callback.methods) == ["fp32", "fp16"] and callback.prune.sizes == (PruneSize(100, 8),)
    assert callback.prune_methods["onnx_int4"].block_size == 32
    assert PruneSettings.from_values(None).sizes == ()  # no pruning unless sizes are given
    with pytest.raises(ConfigError, match=r"takes no `input_dim` argument"):
        check_prunable(type("Net", (), {"net": nn.Linear(4, 2)})(), PruneSettings(sizes=(PruneSize(2),)))


def test_only_text_data_is_pruned_and_a_model_without_hidden_layer_keeps_its_units(tmp_path, mnist_root):
    assert prunable(text_data(tmp_path)) and not prunable(MNISTDataModule(mnist_root))
    sizes = [PruneSize(10, 8), PruneSize(10, 64), PruneSize(10), PruneSize(50, 8)]
    mlp = nn.Sequential(nn.Linear(40, 16), nn.ReLU(), nn.Linear(16, 2))
    expected = [(10, 8, "prune10x8"), (10, None, "prune10"), (10, None, "prune10"), None]  # 64 >= 16 units: all
    assert [pruned_shape(mlp, size) for size in sizes] == expected
    assert pruned_shape(nn.Linear(40, 2), PruneSize(10, 8)) == (10, None, "prune10")  # logistic regression: terms
    assert pruned_shape(mlp, PruneSize(0.25, 8)) == (10, 8, "prune10x8")  # a share of the 40-term vocabulary
    assert pruned_shape(mlp, PruneSize(0.999, 8)) is None  # rounds to the whole vocabulary
    assert pruned_shape(mlp, PruneSize(5, 8, share=0.5)) == (20, 8, "prune20x8")  # the share is more terms here
    assert pruned_shape(mlp, PruneSize(30, 8, share=0.5)) == (30, 8, "prune30x8")  # the count is
    module = narrower(MLP(input_dim=40, hidden_sizes=[16, 8], dropout=0.25), 10, 4)
    assert (module.net[0].in_features, module.net[0].out_features, module.net[3].out_features) == (10, 4, 8)
    assert module.hparams["input_dim"] == 10 and module.hparams["hidden_sizes"] == [4, 8]


PRUNE = "{sizes: [{terms: 12, hidden: 8}, {terms: 40}], epochs: 3, methods: [fp32, onnx_static_int8]"
PRUNE += ", examples_per_epoch: 40}"


def pruning_args(corpus: Path, out: Path, *extra: str, checkpoints_in_run: bool = False) -> list[str]:
    args = text_args(corpus, out, "--trainer.max_epochs", "3", "--test_after_fit", "false")
    if checkpoints_in_run:  # <run>/checkpoints/, where `fit --ckpt_path` finds the run to resume
        args = [a for a in args if "ModelCheckpoint" not in a and not a.startswith("--trainer.callbacks.")]
        args += checkpoint_callback_args(None)
    return [
        *args,
        "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[fp32]",
        "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.005",
        f"--trainer.callbacks.prune={PRUNE}", "--trainer.callbacks.objective=size",
        "--trainer.callbacks.max_accuracy_drop=100", *extra,
    ]  # fmt: skip


def run_cli(*args: str, expect_kill: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == (-signal.SIGKILL if expect_kill else 0), proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def pruned_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("pruned")
    corpus = write_text_corpus(out / "corpus.csv", n=240)
    proc = run_cli("fit", *pruning_args(corpus, out))
    return out, corpus, proc.stdout + proc.stderr


@pytest.mark.slow
def test_a_text_run_reports_fine_tuned_pruned_rows_beside_the_model(pruned_run):
    out, _, output = pruned_run
    run = out / "text_mlp" / "version_0"
    folder = run / "quantization"
    report = json.loads((folder / "report.json").read_text())
    rows = {row["method"]: row for row in report["methods"]}
    vocabulary = rows["fp32+prune12x8"]["vocabulary_terms"]
    assert 12 < vocabulary < 40  # the 40-term size keeps the whole vocabulary: skipped, and said so
    assert list(rows) == ["fp32", "fp32+prune12x8", "onnx_static_int8+prune12x8"]
    assert f"Vocabulary pruning: 1 size(s) keep all {vocabulary:,} terms; skipped." in output
    assert "Vocabulary pruning to 12 terms and 8 units: 3 epoch(s)" in output
    row = rows["onnx_static_int8+prune12x8"]
    assert row["pruned_terms"] == 12 and row["hidden_units"] == 8 and row["importance"] == "weight"
    assert row["sparse_input"] is True and row["bag_rows"] == "int8" and row["prune_epochs"] == 3
    # The bytes that ship: the artifact and the pruned vocabulary beside it (12 terms), exactly.
    preprocessing = folder / row["preprocessing"]
    assert preprocessing.name == "prune12x8.preprocessing.json"
    assert len(json.loads(preprocessing.read_text())["vectorizer"]["vocabulary"]) == 12
    artifact = folder / row["artifact"]
    assert row["shipped_bytes"] == artifact.stat().st_size + preprocessing.stat().st_size == row["size_bytes"] + row[
        "preprocessing_bytes"]  # fmt: skip
    assert rows["fp32"]["shipped_bytes"] > rows["fp32"]["preprocessing_bytes"] > row["preprocessing_bytes"]
    # The fine-tuning trained a narrower copy in its own folder; the run's checkpoints stay the full model.
    (tuned,) = (run / "prune" / "prune12x8").iterdir()
    checkpoint = torch.load(tuned / "checkpoints" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 2 and checkpoint["state_dict"]["net.0.weight"].shape == (8, 12)
    batches = checkpoint["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"]
    assert batches == 3 * 5  # examples_per_epoch 40: 5 batches of 8 an epoch, of the split's 21
    assert checkpoint["hyper_parameters"]["input_dim"] == 12 and row["prune_checkpoint"] == str(
        tuned / "checkpoints" / "last.ckpt")  # fmt: skip
    best = torch.load(out / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]["net.0.weight"]
    assert best.shape == (16, vocabulary)
    # The frontier: every row, smallest shipped first, in report.json, report.md and TensorBoard.
    frontier = report["frontier"]
    assert sorted(r["method"] for r in frontier) == sorted(rows)
    assert [r["shipped_bytes"] for r in frontier] == sorted(r["shipped_bytes"] for r in frontier)
    assert frontier[0]["on_frontier"] and "## Size and accuracy" in (folder / "report.md").read_text()
    events = EventAccumulator(str(run), size_guidance={"images": 0, "tensors": 0})
    events.Reload()
    assert "quant/frontier" in events.Tags()["images"] and "quant/frontier/text_summary" in events.Tags()["tensors"]


@pytest.mark.slow
def test_the_pruned_bundle_predicts_raw_text_as_its_report_row_measured(pruned_run):
    out, corpus, _ = pruned_run
    folder = out / "text_mlp" / "version_0" / "quantization"
    report = json.loads((folder / "report.json").read_text())
    row = min(report["methods"], key=lambda r: r["shipped_bytes"])
    assert report["recommendation"]["method"] == row["method"]  # objective size: the fewest bytes, a pruned row
    assert row["method"] in ("fp32+prune12x8", "onnx_static_int8+prune12x8")
    bundle = load_bundle(folder / "bundle")
    assert bundle.input_dim == 12 and bundle.featurize.vocabulary == featurizer(
        json.loads((folder / row["preprocessing"]).read_text())).vocabulary  # fmt: skip
    dm = TextDataModule(path=str(corpus), max_features=None)
    dm.load_state_dict(torch.load(out / "ckpt" / "last.ckpt", weights_only=True)["TextDataModule"])
    rows = dm.split_rows("test")
    labels = bundle.predict(rows.texts)
    # Its accuracy and its agreement with the fp32 checkpoint are the report row's, to the example (the report's
    # figures are float32 ratios: a count of N examples is exact within half an example).
    n = len(rows.texts)
    assert sum(a == b for a, b in zip(labels, rows.labels, strict=True)) == round(row["accuracy"] * n)
    best = MLP(input_dim=dm.input_dim, hidden_sizes=[16]).eval()  # the last epoch: what the report quantized
    best.net.load_state_dict(load_net_weights(out / "ckpt" / "last.ckpt", best))
    with torch.no_grad():
        fp32 = [dm.classes[i] for i in best(dm.featurize_raw(rows.texts)).argmax(1).tolist()]
    assert sum(a == b for a, b in zip(labels, fp32, strict=True)) == round(row["agreement"] * n)
    assert json.loads((folder / "bundle" / "model_card.json").read_text())["shipped_bytes"] == row["shipped_bytes"]


@pytest.mark.slow
def test_quantize_recommends_the_most_accurate_row_under_max_bytes(pruned_run):
    out, corpus, _ = pruned_run
    args = pruning_args(corpus, out, "--trainer.callbacks.objective=latency_bs1")
    checkpoint = str(out / "ckpt" / "last.ckpt")
    first = json.loads((out / "text_mlp" / "version_0" / "quantization" / "report.json").read_text())["methods"]
    limit = max(r["shipped_bytes"] for r in first if "+prune" in r["method"])
    run_cli("quantize", *args, "--ckpt_path", checkpoint, "--max_bytes", str(limit))
    report = json.loads((out / "text_mlp" / "version_1" / "quantization" / "report.json").read_text())
    fitting = [r for r in report["methods"] if r["shipped_bytes"] <= limit]
    best = max(r["val_accuracy_delta"] for r in fitting)
    rec = report["recommendation"]
    assert rec["objective"] == "accuracy" and rec["max_bytes"] == limit and "fp32" not in [r["method"] for r in fitting]
    assert next(r for r in fitting if r["method"] == rec["method"])["val_accuracy_delta"] == best
    assert "the most accurate of the 2 rows that ship at most" in rec["reason"]


@pytest.mark.slow
def test_pruning_killed_and_resumed_matches_uninterrupted(tmp_path):
    corpus = write_text_corpus(tmp_path / "corpus.csv", n=240)
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_cli("fit", *pruning_args(corpus, whole, checkpoints_in_run=True))
    kill = ["--trainer.callbacks+=tests.faults.KillAtQATEpoch", "--trainer.callbacks.epoch=2"]
    run_cli("fit", *pruning_args(corpus, broken, *kill, checkpoints_in_run=True), expect_kill=True)
    run = broken / "text_mlp" / "version_0"
    assert not (run / "quantization").exists()  # died inside the pruned model's fine-tuning, before the report
    (folder,) = (run / "prune" / "prune12x8").iterdir()
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1

    last = str(run / "checkpoints" / "last.ckpt")
    resumed = run_cli("fit", *pruning_args(corpus, broken, "--ckpt_path", last, checkpoints_in_run=True))
    assert sorted(p.name for p in (broken / "text_mlp").iterdir()) == ["version_0"]
    assert f"Restoring states from the checkpoint path at {folder / 'checkpoints' / 'last.ckpt'}" in (
        resumed.stdout + resumed.stderr)  # fmt: skip
    (expected_folder,) = (whole / "text_mlp" / "version_0" / "prune" / "prune12x8").iterdir()
    assert expected_folder.name == folder.name  # the same source, sizes and settings: the same digest
    expected = torch.load(expected_folder / "checkpoints" / "last.ckpt", weights_only=True)
    got = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)
    assert got["epoch"] == expected["epoch"] == 2 and got["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key
    reports = [json.loads((out / "text_mlp" / "version_0" / "quantization" / "report.json").read_text())["methods"]
               for out in (whole, broken)]  # fmt: skip
    assert [(r["method"], r["accuracy"], r["size_bytes"]) for r in reports[0]] == [
        (r["method"], r["accuracy"], r["size_bytes"]) for r in reports[1]]  # fmt: skip
