"""The native core (``runtime/native``) against the Python runtime: the same tokens and features on every text of the
mirror's corpora and on a generated Unicode set, the same labels (and logits, bit for bit where the artifact's
arithmetic is integer) as the ONNX artifact on every test text and image, the engine ``load_bundle`` picks and how
to force the other, and no numpy or onnxruntime import on the native path."""

from __future__ import annotations

import csv
import hashlib
import json
import random
import subprocess
import sys
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules.text import TextDataModule
from datamodules.text_vectorizer import make_vectorizer, vectorizer_state
from modules.mlp import mlp_body
from quantization import QuantizationData, quantize
from quantization.ship.bundle import write_bundle
from quantization.ship.native_model import Step, model_image
from runtime import BundleError, TextFeaturizer, load_bundle, read_idx_images
from runtime.native_bundle import ENGINE_ENV, NATIVE_FILE
from tests.helpers import REPO, ResidualNet, mirror_path, tiny_text_model

native = pytest.importorskip("quantlight_native", reason="the native core is not built (no C compiler at install)")

WORDS_OR_MARKS = r"(?u)\b\w+\b|[^\w\s]"  # the text recipe's pattern; the other is scikit-learn's default
PATTERNS = {"recipe": WORDS_OR_MARKS, "default": r"(?u)\b\w\w+\b"}
CORPORA = {"tweets": "sentiment-tweets/tweets.csv", "debian": "debian-packages/descriptions.csv"}
ONNX_METHODS = ("fp32", "onnx_dynamic_int8", "onnx_static_int8", "onnx_int4")
# Logits: integer arithmetic is bit for bit (int8 codes times uint8 activations, then the graph's float steps in its
# order); fp32 sums and int4's float block sums are added in another order than ONNX Runtime's kernels: a few ulps.
RELATIVE_TOLERANCE = {"fp32": 1e-5, "onnx_dynamic_int8": 0.0, "onnx_static_int8": 0.0, "onnx_int4": 1e-5}


def corpus_texts(name: str) -> list[str]:
    with open(mirror_path() / CORPORA[name], encoding="utf-8", newline="") as f:
        return [row["text"] for row in csv.DictReader(f)]


def text_model(texts: list[str], pattern: str, lowercase: bool = True, sublinear: bool = False):
    """A native model of a vectorizer fitted on ``texts`` (a zero bag: the featurizer is what is compared), and the
    Python featurizer of the same state."""
    vectorizer = make_vectorizer("tfidf", None, (1, 1), 1, sublinear, lowercase, token_pattern=pattern).fit(texts)
    state = vectorizer_state(vectorizer)
    depth = len(state["vocabulary"])
    image = model_image([Step("bag_f32", depth, 2, arrays=[np.zeros((depth, 2), np.float32)])], {
        "input": "text", "vectorizer": state}, ["a", "b"])  # fmt: skip
    return native.load(image), TextFeaturizer.from_state(state)


def python_tokens(featurize: TextFeaturizer, text: str) -> list[str]:
    return featurize._tokens(text.lower() if featurize.lowercase else text)


def unicode_texts() -> list[str]:
    """Every general category (its first, middle and last code point, alone, inside a word and upper-cased), combining
    marks, U+0130, capital sigmas at word ends, emoji, lone surrogates."""
    by_category: dict[str, list[int]] = {}
    for cp in range(sys.maxunicode + 1):
        by_category.setdefault(unicodedata.category(chr(cp)), []).append(cp)
    texts = []
    for points in by_category.values():
        for cp in (points[0], points[len(points) // 2], points[-1]):
            c = chr(cp)
            texts += [c, f"ab{c}cd", f"Ab {c}{c} CD{c}", f"ΑΣ{c}Σ x{c}"]
    texts += ["İSTANBUL İi", "e\u0301te\u0301 CAFE\u0301", "ΟΔΟΣ ΟΔΟΣ. ΣΑΣ Σ ΑΣ'Σ Α\u0345Σ", "Σ\u0301Α Α\u00adΣ\u00ad"]
    texts += ["🚗🚗 car😀x 👍🏽 ok", "\ud800abc \udfff", "ǅungla ǈ ﬃ ß ẞ Ω K Å", "١٢٣ ٤ ½ ⅷ x²", "a_b __ _"]
    return texts


@pytest.mark.real_data
@pytest.mark.parametrize("corpus", sorted(CORPORA))
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_tokens_and_features_equal_the_python_featurizer_on_every_text(mirror, corpus, pattern):
    texts = corpus_texts(corpus)
    model, featurize = text_model(texts, PATTERNS[pattern], sublinear=pattern == "default")
    for text in texts:
        assert model.tokens(text) == python_tokens(featurize, text), text
        assert model.features(text) == tuple(featurize.row(text)), text  # float64 values, bit for bit


@pytest.mark.parametrize("lowercase", [True, False], ids=["lowercase", "cased"])
@pytest.mark.parametrize("pattern", sorted(PATTERNS))
def test_tokens_equal_python_on_every_unicode_category(pattern, lowercase):
    texts = unicode_texts()
    model, featurize = text_model([*texts, "ab cd"], PATTERNS[pattern], lowercase=lowercase)
    for text in texts:
        assert model.tokens(text) == python_tokens(featurize, text), ascii(text)
        assert model.features(text) == tuple(featurize.row(text)), ascii(text)


def test_invalid_utf8_reads_as_python_decodes_it_with_replacement():
    model, featurize = text_model(["ab cd"], WORDS_OR_MARKS)
    rng = random.Random(0)
    pieces = [b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xe2\x82", b"\xc3", b"\xc0\xaf", b"\xf4\x90\x80\x80", b"ab", b" "]
    samples = [bytes(rng.randrange(256) for _ in range(rng.randrange(12))) for _ in range(3000)]
    samples += [b"".join(rng.choice(pieces) for _ in range(rng.randrange(6))) for _ in range(2000)]
    for data in samples:
        assert model.tokens(data) == python_tokens(featurize, data.decode("utf-8", "replace")), data


@pytest.fixture(scope="module")
def tiny_bundles(tmp_path_factory):
    """Bundles of every ONNX method of a tiny text MLP (hidden 128: its output layer is 4-bit in onnx_int4)."""
    tmp = tmp_path_factory.mktemp("native")
    dm, net, data = tiny_text_model(tmp, hidden=128, sparse_input=True)
    with open(tmp / "corpus.csv", encoding="utf-8", newline="") as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    folders = {
        m: write_bundle(tmp / m, quantize(net, m, data), net, dm.preprocessing(), dm.classes) for m in ONNX_METHODS
    }
    return folders, texts


def assert_same_as_onnx(folder: Path, method: str, inputs) -> None:
    """Native labels equal the artifact's on ONNX Runtime, one input per call; logits within the method's tolerance."""
    fast, reference = load_bundle(folder), load_bundle(folder, engine="onnxruntime")
    assert (fast.engine, reference.engine) == ("native", "onnxruntime")
    expected = np.concatenate([reference.logits(inputs[i : i + 1]) for i in range(len(inputs))])
    logits = fast.logits(inputs)
    assert fast.predict(inputs) == [reference.classes[i] for i in expected.argmax(axis=1)]
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(logits, expected, rtol=0, atol=RELATIVE_TOLERANCE[method] * scale)


@pytest.mark.parametrize("method", ONNX_METHODS)
def test_native_bundle_computes_what_its_artifact_computes(tiny_bundles, method):
    folders, texts = tiny_bundles
    assert_same_as_onnx(folders[method], method, [*texts, "!!! ??", "ΣΑΣ İ 🚗", "\ud800 good"])
    for engine in ("native", "onnxruntime"):  # an empty text is refused alike by both engines, and by the CLI
        with pytest.raises(ValueError, match=r"Text 1 is empty"):
            load_bundle(folders[method], engine=engine).predict(["fine", " "])


@pytest.mark.real_data
@pytest.mark.slow
@pytest.mark.parametrize("corpus", sorted(CORPORA))
def test_native_labels_equal_the_artifact_on_every_test_text(mirror, corpus, tmp_path):
    classes = ["negative", "positive"] if corpus == "tweets" else None
    dm = TextDataModule(str(mirror / CORPORA[corpus]), classes=classes, max_features=100000,
                        token_pattern=WORDS_OR_MARKS, batch_size=256)  # fmt: skip
    dm.setup("fit")
    torch.manual_seed(0)
    net = mlp_body(dm.input_dim, [128], dm.num_classes, dropout=0.0).eval()
    calibration = [x.to_dense() for x, _ in dm.train_dataloader()][:2]
    data = QuantizationData(example=calibration[0][:1], calibration=calibration, sparse_input=True)
    texts = dm.raw_test_inputs()
    for method in ONNX_METHODS:
        folder = write_bundle(tmp_path / method, quantize(net, method, data), net, dm.preprocessing(), dm.classes)
        assert_same_as_onnx(folder, method, texts)


@pytest.mark.real_data
@pytest.mark.parametrize("method", ONNX_METHODS)
def test_native_labels_equal_the_artifact_on_every_mnist_test_image(mirror, method, tmp_path):
    from modules import LogisticRegression

    images = read_idx_images(mirror / "MNIST/raw/t10k-images-idx3-ubyte")
    preprocessing = {"input": "image", "image_shape": [28, 28], "mean": 0.1307, "std": 0.3081}
    torch.manual_seed(0)
    net = LogisticRegression().net.eval() if hasattr(LogisticRegression(), "net") else LogisticRegression().eval()
    features = torch.from_numpy(((images[:512].reshape(512, -1) / 255.0 - 0.1307) / 0.3081).astype(np.float32))
    data = QuantizationData(example=features[:1], calibration=[features[:256], features[256:]])
    classes = [str(d) for d in range(10)]
    folder = write_bundle(tmp_path / "b", quantize(net, method, data), net, preprocessing, classes)
    assert_same_as_onnx(folder, method, images)


def test_engine_is_chosen_forced_and_refused_in_one_line(tiny_bundles, tmp_path, monkeypatch):
    folders, _ = tiny_bundles
    folder = folders["onnx_dynamic_int8"]
    assert load_bundle(folder).engine == "native"
    assert load_bundle(folder, engine="onnxruntime").engine == "onnxruntime"
    monkeypatch.setenv(ENGINE_ENV, "onnxruntime")
    assert load_bundle(folder).engine == "onnxruntime"
    monkeypatch.setenv(ENGINE_ENV, "tpu")
    with pytest.raises(BundleError, match=r"Expected `engine` \(QUANTLIGHT_ENGINE\) to be one of \(auto, native, onnx"):
        load_bundle(folder)
    monkeypatch.delenv(ENGINE_ENV)
    # A graph the core does not compute (a residual block, LayerNorm, GELU): the bundle says so, runs on ONNX Runtime.
    residual = ResidualNet().eval()
    preprocessing = {"input": "image", "image_shape": [8, 8], "mean": 0.0, "std": 1.0}
    artifact = quantize(residual, "onnx_dynamic_int8", QuantizationData(torch.zeros(1, 64)))
    other = write_bundle(tmp_path / "r", artifact, residual,
                         preprocessing, list("abcd"))  # fmt: skip
    assert not (other / NATIVE_FILE).exists()
    bundle = load_bundle(other)
    assert bundle.engine == "onnxruntime" and "does not compute a Constant node" in bundle.engine_note
    with pytest.raises(BundleError, match=r"holds no native model .*Constant node.* engine='onnxruntime'"):
        load_bundle(other, engine="native")


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda b: b[: len(b) // 2], "truncated or padded"),
        (lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:], "corrupted: the checksum"),
        (lambda b: b"PK\x03\x04" + b[4:], "not a Quantlight native model"),
    ],
    ids=["truncated", "flipped", "foreign"],
)
def test_a_damaged_native_model_is_one_line(tiny_bundles, tmp_path, damage, match):
    import shutil

    folder = shutil.copytree(tiny_bundles[0]["onnx_static_int8"], tmp_path / "b")
    data = damage((folder / NATIVE_FILE).read_bytes())
    (folder / NATIVE_FILE).write_bytes(data)
    with pytest.raises(BundleError, match=r"model.qlm does not match the SHA-256 in bundle.json"):
        load_bundle(folder, engine="native")
    manifest = json.loads((folder / "bundle.json").read_text())
    manifest["files"][NATIVE_FILE] = hashlib.sha256(data).hexdigest()  # edited to match: the core's own checks
    (folder / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=match) as err:
        load_bundle(folder, engine="native")
    assert "\n" not in str(err.value)
    assert load_bundle(folder).engine == "onnxruntime"  # auto: the artifact still runs


def test_native_path_imports_neither_numpy_nor_onnxruntime(tiny_bundles):
    folder = tiny_bundles[0]["onnx_dynamic_int8"]
    code = (
        "import sys\n"
        "from runtime import load_bundle\n"
        f"bundle = load_bundle({str(folder)!r})\n"
        "print(bundle.engine, bundle.predict(['good car', 'bad road']))\n"
        "print(sorted(m for m in ('numpy', 'onnxruntime', 'torch') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert out.splitlines()[0].startswith("native [")
    assert out.splitlines()[1] == "[]"


@pytest.fixture(scope="module")
def sanitized_fuzzer(tmp_path_factory) -> Path:
    """``runtime/native/fuzz.c`` and the core built under AddressSanitizer and UndefinedBehaviorSanitizer."""
    import shutil

    compiler = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if compiler is None:
        pytest.skip("no C compiler")
    native_dir = REPO / "runtime/native"
    out = tmp_path_factory.mktemp("fuzz") / "fuzz"
    flags = ["-std=c99", "-g", "-O1", "-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-Wall", "-Werror"]
    sources = [str(native_dir / "fuzz.c"), str(native_dir / "quantlight.c")]
    build = subprocess.run([compiler, *flags, *sources, "-lm", "-o", str(out)], capture_output=True, text=True)
    if build.returncode and any(word in build.stderr for word in ("sanitize", "asan", "ubsan")):  # no runtime
        pytest.skip(f"the compiler cannot build with sanitizers: {build.stderr.splitlines()[0]}")
    assert build.returncode == 0, build.stderr
    return out


@pytest.mark.parametrize("method", [*ONNX_METHODS, "image"])
def test_no_model_damage_or_text_reads_out_of_bounds(tiny_bundles, sanitized_fuzzer, method, tmp_path):
    """Every truncation of the model file, random byte flips (size and checksum fixed up, so that each field's check
    is reached) and random bytes as text, about a second each under the sanitizers: no fault, no undefined behaviour."""
    if method == "image":  # a dense layer reading pixels: (64,) uint8 -> (4,)
        rng = np.random.default_rng(0)
        step = Step("dynq", 64, 4, arrays=[rng.integers(-64, 64, (64, 4), dtype=np.int8), np.ones(1, np.float32)])
        step.arrays.append(np.zeros(1, np.int32))
        preprocessing = {"input": "image", "image_shape": [8, 8], "mean": 0.5, "std": 0.25}
        model = tmp_path / NATIVE_FILE
        model.write_bytes(model_image([step, Step("relu", 4, 4)], preprocessing, list("abcd")))
    else:
        model = tiny_bundles[0][method] / NATIVE_FILE
    run = subprocess.run([str(sanitized_fuzzer), str(model), "1", "7"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "all without a fault" in run.stdout


def build_device(folder: Path, tmp_path: Path) -> Path:
    """The bundle's device folder compiled as its README says: ``cc -std=c99 -Os -Wall -Werror``."""
    import shutil

    compiler = shutil.which("cc")
    if compiler is None or shutil.which("size") is None:
        pytest.skip("no C compiler (cc) or no size (binutils)")
    device = shutil.copytree(folder / "device", tmp_path / "device")
    flags = ["-std=c99", "-Os", "-Wall", "-Werror"]
    subprocess.run([compiler, *flags, "-c", "predict.c", "-o", "predict.o"], cwd=device, check=True)
    subprocess.run([compiler, *flags, "main.c", "predict.o", "-lm", "-o", "classify"], cwd=device, check=True)
    return device


def device_labels(device: Path, lines: list[str]) -> list[str]:
    run = subprocess.run(
        [str(device / "classify")], input="".join(f"{line}\n" for line in lines).encode(), capture_output=True
    )
    assert run.returncode == 0, run.stderr
    return run.stdout.decode().splitlines()


def assert_flash_as_stated(folder: Path, device: Path) -> None:
    """The card's flash is the compiled object's code and constants (the whole model included)."""
    sizes = subprocess.run(["size", "predict.o"], cwd=device, capture_output=True, text=True, check=True).stdout
    text_bytes, data, bss = (int(v) for v in sizes.splitlines()[1].split()[:3])
    stated = load_bundle(folder).card["native"]["device"]
    assert text_bytes + data == stated["flash_bytes"]
    assert data + bss == stated["static_ram_bytes"]


@pytest.mark.parametrize("method", ["onnx_dynamic_int8", "onnx_int4"])
def test_device_build_compiles_and_predicts_what_the_bundle_predicts(tiny_bundles, method, tmp_path):
    folders, texts = tiny_bundles
    device = build_device(folders[method], tmp_path)
    texts = [*texts, "ΣΑΣ İ 🚗 good", "!!! bad ??"]
    assert device_labels(device, texts) == load_bundle(folders[method]).predict(texts)
    assert_flash_as_stated(folders[method], device)


@pytest.mark.real_data
@pytest.mark.parametrize("method", ["onnx_dynamic_int8", "onnx_static_int8", "onnx_int4"])
def test_mnist_device_build_predicts_every_test_image_as_the_bundle(mirror, method, tmp_path):
    from modules import LogisticRegression

    images = read_idx_images(mirror / "MNIST/raw/t10k-images-idx3-ubyte")[:2000]
    preprocessing = {"input": "image", "image_shape": [28, 28], "mean": 0.1307, "std": 0.3081}
    torch.manual_seed(0)
    net = LogisticRegression().net.eval() if hasattr(LogisticRegression(), "net") else LogisticRegression().eval()
    features = torch.from_numpy(((images[:512].reshape(512, -1) / 255.0 - 0.1307) / 0.3081).astype(np.float32))
    data = QuantizationData(example=features[:1], calibration=[features[:256], features[256:]])
    folder = write_bundle(tmp_path / "b", quantize(net, method, data), net, preprocessing, [str(d) for d in range(10)])
    device = build_device(folder, tmp_path)
    lines = [" ".join(map(str, image.reshape(-1).tolist())) for image in images]
    reference = load_bundle(folder, engine="onnxruntime")  # one image a call: dynamic int8 quantizes per call
    assert device_labels(device, lines) == [reference.predict(images[i : i + 1])[0] for i in range(len(images))]
    assert_flash_as_stated(folder, device)
