"""Deployable bundles: plain-data featurizers equal to scikit-learn and the MNIST datamodule, bundles that
predict what their artifacts predict from raw inputs, ``predict --artifact`` on the CLI, one-line errors."""

from __future__ import annotations

import csv
import itertools
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from datamodules.mnist import MNISTDataModule, load_mnist_split
from datamodules.text import TextDataModule
from datamodules.text_vectorizer import make_vectorizer, vectorizer_state
from modules import MLP, LogisticRegression
from quantization import METHODS, QuantizationData, quantize
from quantization.measure.accuracy import predict
from quantization.measure.end_to_end import end_to_end_latency
from quantization.ship.bundle import MANIFEST, load_bundle, write_bundle
from runtime import TextFeaturizer, featurizer, read_idx_images, read_images
from runtime.native_bundle import NATIVE_FILE
from storage.checkpoints import load_net_weights
from tests.helpers import REPO, ResidualNet, cli_error, main, mnist_args, text_args, tiny_text_model, write_text_corpus

# One float32 rounding (at most half an ulp: 2^-24 relative) of a float64 value that the same operations in
# the same order make equal to scikit-learn's; 2^-40 leaves room for a reordered sum of up to 2^12 terms
# (2^-53 relative each), should scikit-learn ever sum a row's squares in another order.
FLOAT32_ROUNDING = 2.0**-24 + 2.0**-40

SYNTHETIC = [
    "Good good GOOD car, the car drives well",
    "Ünïcödé naïve café — straße ÉCOLE École",  # non-ASCII word characters, uppercase that str.lower folds
    "",  # empty
    "zzz qqq xyzzy",  # only unknown words
    "a b c ! ? 1",  # only one-character tokens, which the token pattern skips
    "the the the the road road bus 42 42 self-driving self driving",
    "日本語 テキスト 日本語 and émojis 🚗🚗 car",
    "new\tline\nseparated   words  Road ROAD road",
]
UNKNOWN = SYNTHETIC[3]
FIT = [*(t for t in SYNTHETIC if t != UNKNOWN), "good car road bus self driving the new émojis", "café école straße"]
VECTORIZERS = {
    "tfidf": {"kind": "tfidf"},
    "tfidf-bigrams": {"kind": "tfidf", "ngram_range": (1, 2)},
    "tfidf-2-3grams-sublinear": {"kind": "tfidf", "ngram_range": (2, 3), "sublinear_tf": True},
    "tfidf-cased": {"kind": "tfidf", "lowercase": False},
    "count-bigrams": {"kind": "count", "ngram_range": (1, 2)},
}


def fitted(kind: str = "tfidf", ngram_range=(1, 1), sublinear_tf: bool = False, lowercase: bool = True):
    return make_vectorizer(kind, None, ngram_range, 1, sublinear_tf, lowercase).fit(FIT)


def assert_float32_rounding(ours: np.ndarray, reference) -> None:
    """``ours`` (float32) is scikit-learn's float64 ``reference`` rounded once: same zeros, values within a rounding."""
    reference = reference.toarray() if hasattr(reference, "toarray") else np.asarray(reference)
    assert ours.dtype == np.float32 and ours.shape == reference.shape
    assert np.array_equal(ours != 0, reference != 0)
    error = np.abs(ours.astype(np.float64) - reference)
    assert (error <= FLOAT32_ROUNDING * np.abs(reference)).all(), float((error / np.abs(reference).clip(1e-300)).max())


@pytest.mark.parametrize("settings", list(VECTORIZERS.values()), ids=list(VECTORIZERS))
def test_text_featurizer_equals_scikit_learn(settings):
    vectorizer = fitted(**settings)
    reference = vectorizer.transform(SYNTHETIC)  # float64 (tfidf) or int64 counts
    ours = TextFeaturizer.from_state(vectorizer_state(vectorizer))(SYNTHETIC)
    assert_float32_rounding(ours, reference.astype(np.float64))
    assert not ours[2:5].any()  # empty, unknown-only and one-character texts are zero rows
    if settings["kind"] == "count":
        assert np.array_equal(ours, reference.toarray())  # small integer counts are exact in float32


@pytest.mark.parametrize(
    ("texts", "match"),
    [("one text", r"a list of texts, got one str"), ([b"bytes"], r"texts as str, got a bytes")],
    ids=["str", "bytes"],
)
def test_text_featurizer_refuses_what_is_not_a_list_of_texts(texts, match):
    with pytest.raises(ValueError, match=match):
        TextFeaturizer.from_state(vectorizer_state(fitted()))(texts)


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("ngram_range", [(1, 1), (1, 2)], ids=["unigrams", "bigrams"])
def test_text_featurizer_equals_scikit_learn_on_the_tweets(mirror, ngram_range):
    corpus = mirror / "sentiment-tweets" / "tweets.csv"
    if not corpus.is_file():
        pytest.fail(f"The offline mirror at {mirror} lacks sentiment-tweets/tweets.csv.")
    dm = TextDataModule(str(corpus), classes=["negative", "positive"], ngram_range=ngram_range)
    texts = dm.split_rows("test").texts
    preprocessing = json.loads(json.dumps(dm.preprocessing()))  # as a bundle stores it
    assert_float32_rounding(featurizer(preprocessing)(texts), dm.vectorize(texts))


def test_image_featurizer_equals_the_mnist_datamodule(mnist_root):
    raw = mnist_root / "MNIST" / "raw"
    images = read_idx_images(raw / "t10k-images-idx3-ubyte")  # (200, 28, 28) uint8
    features, _ = load_mnist_split(raw, "test")
    dm = MNISTDataModule(mnist_root)
    ours = featurizer(json.loads(json.dumps(dm.preprocessing())))(images)
    assert torch.equal(torch.from_numpy(ours), features)  # a table of the 256 values, computed the datamodule's way
    assert dm.classes == [str(d) for d in range(10)]


def test_image_files_read_like_idx_rows(mnist_root, tmp_path):
    images = read_idx_images(mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte")[:3]
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i}.png")
    read, names = read_images(folder)
    assert np.array_equal(read, images) and names == ["0.png", "1.png", "2.png"]
    assert read_images(folder / "1.png")[0].shape == (1, 28, 28)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\x00\x08\x01" + (3).to_bytes(4, "big") + b"abc", r"magic number 2049, expected 2051"),
        (b"\x1f\x8b\x08\x00rest", r"a gzip archive \(gunzip it\)"),
        (b"\x00\x00\x08\x03" + b"".join(n.to_bytes(4, "big") for n in (2, 28, 28)) + bytes(784), r"truncated"),
    ],
    ids=["labels-file", "gzip", "truncated"],
)
def test_bad_idx_image_file_is_named(tmp_path, content, match):
    path = tmp_path / "images-idx3-ubyte"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_idx_images(path)


@pytest.fixture(scope="module")
def text_setup(tmp_path_factory) -> tuple[TextDataModule, torch.nn.Module, QuantizationData]:
    """A tiny corpus's datamodule (fitted vectorizer), a seeded random MLP body over it, and calibration batches;
    artifacts read term ids and weights, as the quantization callback makes them for text."""
    return tiny_text_model(tmp_path_factory.mktemp("text"), sparse_input=True)


TEXT_METHODS = ["onnx_static_int8", "onnx_dynamic_int8", "onnx_int4", "dynamic_int8", "int4_weight_only", "fp32"]


@pytest.mark.parametrize("method", TEXT_METHODS, ids=TEXT_METHODS)
def test_bundle_predicts_what_its_artifact_predicts_from_raw_text(text_setup, method, tmp_path):
    dm, net, data = text_setup
    artifact = quantize(net, method, data)
    folder = write_bundle(tmp_path / "bundle", artifact, net, dm.preprocessing(), dm.classes, {"accuracy": 0.5})
    bundle = load_bundle(folder)
    runner = METHODS[method].load(artifact.data, net, 1)
    # The report's in-process evaluation (the test batches of scikit-learn's sparse vectors) and the bundle on
    # the same batches of raw text: dynamic int8 quantizes activations per batch, so the batches match too.
    dm.setup("test")
    batches = list(dm.test_dataloader())
    evaluated, _ = predict(runner, batches)
    texts = dm.split_rows("test").texts
    starts = np.cumsum([0] + [len(y) for _, y in batches])
    labels = [label for a, b in itertools.pairwise(starts) for label in bundle.predict(texts[a:b])]
    assert labels == [dm.classes[i] for i in evaluated.tolist()]  # 100 % agreement
    probabilities = bundle.predict_proba(texts)  # (N, 2), one call
    assert probabilities.shape == (len(texts), 2) and probabilities.dtype == np.float32
    assert [dm.classes[i] for i in probabilities.argmax(1)] == bundle.predict(texts)
    shipped = ".onnx" if method == "fp32" else artifact.suffix  # fp32 ships as ONNX: the same weights, no torch
    native = ["device", NATIVE_FILE] if shipped == ".onnx" else []  # the native core's model and device build
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MANIFEST, f"{method}{shipped}", "preprocessing.json", "model_card.json", "model_card.md", *native]
    )
    card = json.loads((folder / "model_card.json").read_text())
    artifact_bytes = (folder / f"{method}{shipped}").stat().st_size
    assert card["method"] == method and card["accuracy"] == 0.5 and card["artifact_bytes"] == artifact_bytes
    assert card["shipped_bytes"] == artifact_bytes + (folder / "preprocessing.json").stat().st_size
    assert "| accuracy | 0.5 |" in (folder / "model_card.md").read_text()


def test_bundle_loads_without_lightning_or_scikit_learn(text_setup, tmp_path):
    dm, net, data = text_setup
    folder = write_bundle(tmp_path / "b", quantize(net, "onnx_static_int8", data), None, dm.preprocessing(), dm.classes)
    texts = dm.split_rows("test").texts[:5]
    code = (
        "import sys\nfrom quantization.ship.bundle import load_bundle\n"
        f"print(load_bundle({str(folder)!r}).predict({texts!r}))\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & {'lightning', 'sklearn', 'pytorch_lightning'})\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == [str(load_bundle(folder).predict(texts)), "[]"]


def test_preprocessing_ships_compact_and_a_version_2_bundle_still_loads(text_setup, tmp_path):
    dm, net, data = text_setup
    folder = write_bundle(tmp_path / "b", quantize(net, "onnx_static_int8", data), None, dm.preprocessing(), dm.classes)
    shipped = (folder / "preprocessing.json").read_text(encoding="utf-8")
    vocabulary = dm.preprocessing()["vectorizer"]["vocabulary"]
    assert "\n" not in shipped.rstrip("\n") and ": " not in shipped  # compact: one line, no spaces after separators
    assert json.loads(shipped)["vectorizer"]["vocabulary"] == sorted(vocabulary, key=vocabulary.get)  # column order
    texts = [*dm.split_rows("test").texts, "words it never saw"]
    labels = load_bundle(folder).predict(texts)
    # What version 2 wrote: the vocabulary as a term -> column mapping, indented; it reads the same.
    (folder / "preprocessing.json").write_text(json.dumps(dm.preprocessing(), indent=1), encoding="utf-8")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps(manifest | {"version": 2}), encoding="utf-8")
    assert load_bundle(folder).predict(texts) == labels
    assert len(shipped.encode()) < 0.8 * (folder / "preprocessing.json").stat().st_size


def test_rewriting_a_bundle_replaces_its_artifact(text_setup, tmp_path):
    dm, net, data = text_setup
    write_bundle(tmp_path / "b", quantize(net, "onnx_int4", data), net, dm.preprocessing(), dm.classes)
    write_bundle(tmp_path / "b", quantize(net, "fp32", data), net, dm.preprocessing(), dm.classes)
    assert not (tmp_path / "b" / "onnx_int4.onnx").exists() and load_bundle(tmp_path / "b").method == "fp32"


def test_write_bundle_refuses_parts_that_do_not_fit(text_setup, tmp_path):
    dm, net, data = text_setup
    residual = ResidualNet().eval()
    with pytest.raises(ValueError, match=r"int4_weight_only artifact of ResidualNet needs its Python model class"):
        write_bundle(
            tmp_path,
            quantize(residual, "int4_weight_only", QuantizationData(torch.zeros(1, 64))),
            residual,
            {},
            ["a", "b"],
        )
    artifact = quantize(net, "onnx_dynamic_int8", data)
    with pytest.raises(ValueError, match=r"gives 2 logits per example but `classes` names 3 labels"):
        write_bundle(tmp_path, artifact, net, dm.preprocessing(), ["a", "b", "c"])
    image = MNISTDataModule().preprocessing()
    with pytest.raises(ValueError, match=r"does not take the preprocessing's 784 features per example"):
        write_bundle(tmp_path, artifact, net, image, dm.classes)
    assert not any(tmp_path.iterdir())  # nothing written


def test_end_to_end_latency_times_every_part(text_setup, tmp_path):
    dm, net, data = text_setup
    bundle = load_bundle(write_bundle(tmp_path, quantize(net, "onnx_int4", data), net, dm.preprocessing(), dm.classes))
    texts = dm.split_rows("test").texts
    results = end_to_end_latency({"int4": bundle}, texts, batch_sizes=(1, 4), min_run_time_s=0.01)
    for figures in results["int4"].values():
        assert all(
            0 < figures[f"{part}_ms"]["median"] <= figures[f"{part}_ms"]["p90"]
            for part in ("end_to_end", "features", "model")
        )
        assert 0 < figures["features_share"] < 1


# --- the CLI: `predict --artifact <bundle>` writes what `predict --ckpt_path` writes --------------------------


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> tuple[Path, Path, Path]:
    """A tiny corpus, the last.ckpt of a 3-epoch CLI fit on it, and an onnx_dynamic_int8 bundle of that checkpoint."""
    tmp = tmp_path_factory.mktemp("text_run")
    corpus = write_text_corpus(tmp / "corpus.csv")
    main(["fit", *text_args(corpus, tmp, "--trainer.max_epochs", "3", "--test_after_fit", "false")])
    ckpt = tmp / "ckpt" / "last.ckpt"
    dm = TextDataModule(str(corpus), vectorizer_checkpoint=str(ckpt))
    model = MLP(input_dim=dm.input_dim, hidden_sizes=[16], num_classes=2)
    model.net.load_state_dict(load_net_weights(ckpt, model))
    artifact = quantize(model.net.eval(), "onnx_dynamic_int8", QuantizationData(torch.zeros(1, dm.input_dim)))
    return corpus, ckpt, write_bundle(tmp / "bundle", artifact, model.net, dm.preprocessing(), dm.classes)


def writer_args(output: Path) -> list[str]:
    return [
        "--trainer.callbacks+=callbacks.prediction_writer.PredictionWriter",
        f"--trainer.callbacks.output_path={output}",
    ]


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"], ids=["csv", "jsonl"])
def test_cli_predict_from_a_bundle_writes_what_the_checkpoint_writes(text_run, tmp_path, suffix):
    _, ckpt, bundle = text_run
    texts = tmp_path / "texts.jsonl"
    records = [{"text": "good great car"}, {"text": " "}, {"text": "bad awful road", "label": "negative"}]
    texts.write_text("\n".join(json.dumps(r) for r in records) + "\n" + json.dumps({"text": "nothing known"}) + "\n")
    written = {}
    for name, source in (("bundle", ["--artifact", str(bundle)]), ("checkpoint", ["--ckpt_path", str(ckpt)])):
        output = tmp_path / f"{name}{suffix}"
        args = text_args(
            tmp_path / "no-corpus.csv", tmp_path, *writer_args(output), "--data.init_args.on_bad_row", "skip"
        )
        with pytest.warns(UserWarning, match=r"Skipped 1 bad row"):
            main(["predict", *args, "--data.init_args.predict_path", str(texts), *source])
        written[name] = (
            read_csv(output) if suffix == ".csv" else [json.loads(line) for line in output.read_text().splitlines()]
        )
    bundle_rows, checkpoint_rows = written["bundle"], written["checkpoint"]
    assert [sorted(r) for r in bundle_rows] == [sorted(r) for r in checkpoint_rows]  # the same columns, row by row
    for ours, theirs in zip(bundle_rows, checkpoint_rows, strict=True):
        assert {k: v for k, v in ours.items() if "prob" not in k} == {
            k: v for k, v in theirs.items() if "prob" not in k
        }
    assert [r["label"] for r in bundle_rows if r.get("label")] == ["positive", "negative", bundle_rows[3]["label"]]


def test_cli_predict_from_an_image_bundle_reads_idx_images(mnist_root, tmp_path):
    checkpoint = [
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        "--trainer.callbacks.filename=last",
    ]
    checkpoint += [f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}"]
    main(
        [
            "fit",
            *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false", *checkpoint),
        ]
    )
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    model = LogisticRegression()
    model.net.load_state_dict(load_net_weights(ckpt, model))
    dm = MNISTDataModule(mnist_root)
    artifact = quantize(model.net.eval(), "fp32", QuantizationData(torch.zeros(1, 784)))
    bundle = write_bundle(tmp_path / "bundle", artifact, model.net, dm.preprocessing(), dm.classes)
    idx = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    outputs = {}
    for name, source in (
        ("bundle", ["--artifact", str(bundle), "--inputs", str(idx)]),
        ("checkpoint", ["--ckpt_path", str(ckpt)]),
    ):
        outputs[name] = tmp_path / f"{name}.csv"
        main(["predict", *mnist_args(mnist_root, tmp_path, *writer_args(outputs[name])), *source])
    ours, theirs = read_csv(outputs["bundle"]), read_csv(outputs["checkpoint"])
    assert len(ours) == 200 and [r["line"] for r in ours] == [r["line"] for r in theirs]
    assert [r["label"] for r in ours] == [r["label"] for r in theirs]  # fp32 both: the same model
    assert list(ours[0]) == list(theirs[0])


def bundle_with(bundle: Path, tmp_path: Path, change) -> Path:
    copy = tmp_path / "copy"
    copy.mkdir()
    for path in bundle.iterdir():
        if path.is_file():
            (copy / path.name).write_bytes(path.read_bytes())
    change(copy)
    return copy


def _set_version(folder: Path) -> None:
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps(manifest | {"version": 99}))


def _truncate_artifact(folder: Path) -> None:
    path = folder / "onnx_dynamic_int8.onnx"
    path.write_bytes(path.read_bytes()[:1000])


BAD_BUNDLES = {
    "missing-folder": (lambda b, t: t / "nowhere", r"Bundle .*nowhere not found\. Pass the folder write_bundle wrote"),
    "a-file": (lambda b, t: b / "model_card.md", r"model_card.md is a file, not a bundle folder"),
    "no-manifest": (
        lambda b, t: bundle_with(b, t, lambda f: (f / MANIFEST).unlink()),
        r"holds no bundle.json \(found: model.qlm, model_card.json, .*\): not a bundle",
    ),
    "wrong-version": (
        lambda b, t: bundle_with(b, t, _set_version),
        r"version 99; this Quantlight reads 'quantlight-bundle' version 1, 2, 3 or 4\. Write the bundle again",
    ),
    "missing-artifact": (
        lambda b, t: bundle_with(b, t, lambda f: (f / "onnx_dynamic_int8.onnx").unlink()),
        r"lacks its artifact onnx_dynamic_int8.onnx\. Copy the whole folder",
    ),
    "truncated-artifact": (
        lambda b, t: bundle_with(b, t, _truncate_artifact),
        r"onnx_dynamic_int8.onnx does not match the SHA-256 in bundle.json \(truncated or replaced\)",
    ),
    "edited-preprocessing": (  # every file is checked against its SHA-256 in bundle.json
        lambda b, t: bundle_with(b, t, lambda f: (f / "preprocessing.json").write_text("{")),
        r"preprocessing.json does not match the SHA-256 in bundle.json \(truncated or replaced\)",
    ),
}


@pytest.mark.parametrize(("make", "match"), list(BAD_BUNDLES.values()), ids=list(BAD_BUNDLES))
def test_bad_bundle_is_a_one_line_error(text_run, tmp_path, capsys, make, match):
    corpus, _, bundle = text_run
    texts = tmp_path / "texts.txt"
    texts.write_text("good car\n")
    args = text_args(corpus, tmp_path, "--data.init_args.predict_path", str(texts))
    err = cli_error(capsys, "predict", *args, "--artifact", str(make(bundle, tmp_path)))
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ")
    assert re.search(match, err), err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--artifact", "{bundle}", "--ckpt_path", "{ckpt}"], r"Pass --ckpt_path .* or --artifact .*, not both"),
        (["--inputs", "{corpus}"], r"--inputs gives raw images to a bundle: pass --artifact"),
        (["--artifact", "{bundle}", "--inputs", "{corpus}"], r"--inputs gives images; a text bundle reads"),
        (["--artifact", "{bundle}", "--data.init_args.classes", "[positive,negative]"], r"classes \(negative, pos"),
    ],
    ids=["with-checkpoint", "inputs-alone", "inputs-for-text", "other-classes"],
)  # fmt: skip
def test_predict_arguments_that_do_not_go_together(text_run, tmp_path, capsys, extra, match):
    corpus, ckpt, bundle = text_run
    texts = tmp_path / "texts.txt"
    texts.write_text("good car\n")
    extra = [arg.format(ckpt=ckpt, corpus=corpus, bundle=bundle) for arg in extra]
    err = cli_error(
        capsys, "predict", *text_args(corpus, tmp_path, "--data.init_args.predict_path", str(texts)), *extra
    )
    assert re.search(match, err.splitlines()[-1]), err


def test_text_bundle_with_an_image_config_is_a_one_line_error(text_run, mnist_root, tmp_path, capsys):
    _, _, bundle = text_run
    err = cli_error(capsys, "predict", *mnist_args(mnist_root, tmp_path), "--artifact", str(bundle))
    assert "The bundle reads text (" in err and "datamodules.MNISTDataModule, reads images." in err
