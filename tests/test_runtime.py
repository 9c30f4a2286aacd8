"""The torch-free runtime: bundles load and predict in a fresh process that imports numpy and ONNX Runtime and
nothing heavier, torch bundles say in one line that they need torch, and the runtime never imports the engine."""

from __future__ import annotations

import ast
import csv
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from datamodules.mnist import MNISTDataModule
from datamodules.text_vectorizer import vectorizer_json_state
from quantization import QuantizationData, quantize
from quantization.measure.memory import bundle_footprint
from quantization.ship.bundle import load_bundle as engine_load_bundle
from quantization.ship.bundle import write_bundle
from runtime import Bag, BundleError, TextFeaturizer, load_bundle, read_idx_images
from tests.helpers import REPO, mirror_path, tiny_text_model

HEAVY = {"torch", "lightning", "pytorch_lightning", "sklearn", "scipy", "quantization", "torchvision"}


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    return tiny_text_model(tmp_path_factory.mktemp("text"), sparse_input=True)


def fresh_predict(folder, inputs_code: str) -> tuple[list[str], list[str]]:
    """Labels from a fresh interpreter that imports only ``runtime``, and the heavy modules it had loaded."""
    code = (
        "import sys, json, numpy\n"
        "from runtime import load_bundle\n"
        f"labels = load_bundle({str(folder)!r}).predict({inputs_code})\n"
        f"print(json.dumps([labels, sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r})]))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    labels, heavy = json.loads(done.stdout.splitlines()[-1])
    return labels, heavy


@pytest.mark.parametrize("method", ["onnx_static_int8", "onnx_int4", "fp32"])
def test_a_text_bundle_predicts_in_a_process_without_torch(text, tmp_path, method):
    dm, net, data = text
    folder = write_bundle(tmp_path / "b", quantize(net, method, data), net, dm.preprocessing(), dm.classes)
    texts = [*dm.split_rows("test").texts[:12], "words it never saw"]
    labels, heavy = fresh_predict(folder, repr(texts))
    assert heavy == []
    assert labels == engine_load_bundle(folder).predict(texts)  # the engine's loader gives the runtime's Bundle
    with torch.no_grad():  # and the fp32 model's labels, exactly for fp32 (ONNX: the same weights)
        reference = net(torch.from_numpy(load_bundle(folder).featurize(texts))).argmax(1).tolist()
    if method == "fp32":
        assert labels == [dm.classes[i] for i in reference]
    manifest = json.loads((folder / "bundle.json").read_text())
    assert manifest["runtime"] == "onnxruntime" and manifest["sparse_input"] is True and manifest["version"] == 4


def test_an_mnist_bundle_loads_without_torch_and_labels_as_the_checkpoint(mnist_root, tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Linear(784, 10).eval()
    dm = MNISTDataModule(mnist_root)
    folder = write_bundle(tmp_path / "b", quantize(net, "fp32", QuantizationData(torch.zeros(1, 784))), net,
                          dm.preprocessing(), dm.classes)  # fmt: skip
    assert (folder / "fp32.onnx").is_file()  # the fp32 torch artifact ships as ONNX: the same weights
    idx = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    labels, heavy = fresh_predict(folder, f"__import__('runtime').read_idx_images({str(idx)!r})")
    assert heavy == []
    with torch.no_grad():
        expected = net(dm.featurize_raw(read_idx_images(idx).copy())).argmax(1).tolist()
    assert labels == [str(i) for i in expected]
    assert not load_bundle(folder).sparse_input  # images: dense rows


def test_a_torch_bundle_says_it_needs_torch(text, tmp_path):
    dm, net, data = text
    folder = write_bundle(tmp_path / "b", quantize(net, "int4_weight_only", data), net, dm.preprocessing(), dm.classes)
    with pytest.raises(BundleError) as refusal:
        load_bundle(folder)
    message = str(refusal.value)
    assert len(message.splitlines()) == 1
    assert "holds a torch artifact (int4_weight_only.pt, method int4_weight_only), which needs torch" in message
    assert "quantization.ship.bundle.load_bundle" in message and "--trainer.callbacks.methods" in message
    texts = dm.split_rows("test").texts[:5]
    assert len(engine_load_bundle(folder).predict(texts)) == 5  # with torch, it loads
    assert json.loads((folder / "bundle.json").read_text())["runtime"] == "torch"


@pytest.mark.slow
def test_footprint_of_a_fresh_process(text, tmp_path):
    dm, net, data = text
    artifact = quantize(net, "onnx_dynamic_int8", data)
    onnx_bundle = write_bundle(tmp_path / "a", artifact, net, dm.preprocessing(), dm.classes)
    light = bundle_footprint(onnx_bundle, "good great car")
    assert light["loader"] == "runtime" and light["heavy_modules"] == []
    assert 10 * 2**20 < light["peak_rss_bytes"] < 2**30 and 0 < light["import_load_s"] < 60
    torch_bundle = write_bundle(tmp_path / "b", quantize(net, "fp16", data), net, dm.preprocessing(), dm.classes)
    heavy = bundle_footprint(torch_bundle, "good great car")  # a .pt bundle loads with torch: the report says so
    assert heavy["loader"] == "quantization.ship.bundle" and "torch" in heavy["heavy_modules"]
    assert heavy["peak_rss_bytes"] > light["peak_rss_bytes"]


def test_runtime_sources_import_numpy_and_onnxruntime_only():
    """Statically, every import in runtime/: the standard library, numpy, onnxruntime, PIL (image files), itself and
    its native core (quantlight_native, built from runtime/native)."""
    allowed = {"numpy", "onnxruntime", "PIL", "quantlight_native"}
    for path in (REPO / "runtime").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in allowed or top in sys.stdlib_module_names, f"{path.name} imports {name}"


def test_bags_from_rows_coo_and_dense_agree():
    rows = [([1, 4], [0.6, 0.8]), ([], []), ([0, 2, 3], [1.0, 2.0, 3.0])]
    bag = Bag.from_rows(rows)
    assert bag.ids.shape == (3, 3) and bag.lengths.tolist() == [2, 0, 3]
    dense = bag.dense(5)
    expected = np.zeros((3, 5), np.float32)
    expected[0, [1, 4]] = [0.6, 0.8]
    expected[2, [0, 2, 3]] = [1.0, 2.0, 3.0]
    assert np.array_equal(dense, expected)  # the padding (id 0, weight 0) never lands on column 0
    again = Bag.from_dense(dense)
    assert np.array_equal(again.ids, bag.ids) and np.array_equal(again.weights, bag.weights)
    one = Bag.from_rows([([2, 7], [0.5, 0.5])])
    assert one.lengths is None and np.array_equal(one.dense(8)[0, [2, 7]], [0.5, 0.5])


@pytest.mark.real_data
@pytest.mark.parametrize("config", ["text_mlp.yaml", "text_mlp_dense.yaml"])
def test_the_featurizer_gives_scikit_learns_vectors_for_every_tweet(config):
    """The bundle's featurizer with a config's tokens (its faster equivalent pattern included) against
    scikit-learn's ``TfidfVectorizer`` on every tweet of the mirror, the vectorizer fitted on half of them."""
    settings = yaml.safe_load((REPO / "configs" / config).read_text("utf-8"))["data"]["init_args"]
    pattern = settings.get("token_pattern", r"(?u)\b\w\w+\b")
    with (mirror_path() / "sentiment-tweets" / "tweets.csv").open(newline="", encoding="utf-8") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    reference = TfidfVectorizer(token_pattern=pattern, max_features=settings["max_features"]).fit(texts[::2])
    featurize = TextFeaturizer.from_state(vectorizer_json_state(reference))
    for start in range(0, len(texts), 2000):  # (2000, D) dense at a time
        chunk = texts[start : start + 2000]
        np.testing.assert_array_equal(featurize(chunk), reference.transform(chunk).toarray().astype(np.float32))


@pytest.mark.real_data
@pytest.mark.parametrize(
    "settings",
    [{}, {"sublinear_tf": True}, {"norm": None}, {"ngram_range": (1, 2)}, {"counts": True}, {"lowercase": False}],
    ids=["tfidf", "sublinear", "no-norm", "bigrams", "counts", "cased"],
)
def test_many_texts_at_once_give_each_texts_float64_values_bit_for_bit(settings):
    """``nonzeros`` (batches of many texts, the pruned rows' test splits) against ``row`` (one text, the path the
    native core is checked against) on every tweet and Debian description, before any rounding to float32."""
    texts = []
    for corpus in ("sentiment-tweets/tweets.csv", "debian-packages/descriptions.csv"):
        with (mirror_path() / corpus).open(newline="", encoding="utf-8") as f:
            texts += [row["text"] for row in csv.DictReader(f)]
    texts += ["", "!!! ???", "good good good good bad", "İSTANBUL ΣΑΣ 😀😀"]  # no term, punctuation, repeats
    settings = dict(settings)
    kind = CountVectorizer if settings.pop("counts", False) else TfidfVectorizer
    reference = kind(token_pattern=r"(?u)\b\w+\b|[^\w\s]", max_features=30_000, **settings).fit(texts[::3])
    featurize = TextFeaturizer.from_state(vectorizer_json_state(reference))
    rows, ids, values = featurize.nonzeros(featurize.terms(texts))
    one_by_one = [featurize.row(text) for text in texts]
    assert rows.tolist() == [b for b, (row_ids, _) in enumerate(one_by_one) for _ in row_ids]
    assert ids.tolist() == [j for row_ids, _ in one_by_one for j in row_ids]
    assert values.tolist() == [v for _, row_values in one_by_one for v in row_values]  # float64, exactly
    bag, expected = featurize.bag(texts[-4:]), Bag.from_rows(one_by_one[-4:])  # an empty text: a row of padding
    assert bag.lengths.tolist()[0] == 0 and bag.lengths.tolist() == expected.lengths.tolist()
    assert np.array_equal(bag.ids, expected.ids) and np.array_equal(bag.weights, expected.weights)
