"""Bad input through the CLI: exit status 2, a clear message, no traceback, the user's files untouched."""

from __future__ import annotations

import gzip
import json
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from datamodules import MNISTDataModule, TextDataModule
from datamodules.text_corpus import read_rows
from modules import MLP, LogisticRegression
from quantization import QuantizationData, quantize
from quantization.ship.bundle import write_bundle
from tests.helpers import checkpoint_callback_args, cli_error, main, mnist_args, text_args, write_text_corpus


@pytest.mark.parametrize(
    ("content", "val_file", "message"),
    [
        (b"sentence,label\nhi,positive\n", False, r"error: Column .text. not found in .*corpus.csv \(columns: sent"),
        (b"", False, r"error: .*corpus.csv is empty"),
        (b"text,label\ngood car,positive\n  ,negative\n", False, r"error: Bad row at .*corpus.csv:3: empty text"),
        (b"text,label\ngood car,positive\nbad \xff road,negative\n", False, r"error: Bad row at .*:3: undecodable"),
        (b"text,label\nmeh,neutral\n", True, r"error: Bad row at .*val.csv:2: unknown label 'neutral' \(classes: "),
    ],
    ids=["missing-column", "empty-file", "empty-text", "non-utf8", "label-outside-classes"],
)  # fmt: skip
def test_bad_corpus(content, val_file, message, tmp_path, capsys):
    corpus = tmp_path / ("val.csv" if val_file else "corpus.csv")
    corpus.write_bytes(content)
    extra = []
    if val_file:  # the training file fixes the classes; the validation file has a label outside them
        train = write_text_corpus(tmp_path / "train.csv")
        extra = ["--data.init_args.path", "null", "--data.init_args.train_path", str(train),
                 "--data.init_args.val_path", str(corpus)]  # fmt: skip
    line = cli_error(capsys, "fit", *text_args(corpus, tmp_path, "--trainer.max_epochs", "1"), *extra).splitlines()[-1]
    assert re.match(message, line)
    assert corpus.read_bytes() == content


METHOD_NAMES = r"\(bf16, dynamic_int8, .*int3_weight_only, .*weight_only_int8\)"


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["--model.init_args.no_such_arg", "1"],
            r"--model.no_such_arg is not an argument of modules.LogisticRegression \(its arguments: .*optimizer",
        ),
        (["--model.init_args.optimzer", "1"], r"--model.optimzer is not an argument of .*did you mean `optimizer`\?"),
        (["--trainer.max_epochs", "many"], r"--trainer.max_epochs: expected an integer, got 'many'"),
        (["--data.batch_size", "0"], r"Expected `batch_size` >= 1, got 0.$"),
        (
            ["--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[fp32, int3]"],
            rf"--trainer.callbacks.methods: expected one of {METHOD_NAMES}, got 'int3'",
        ),
        (
            ["--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.sensitivity=[int9]"],
            rf"--trainer.callbacks.sensitivity: expected one of {METHOD_NAMES}, got 'int9'\. "
            r"See `python cli.py fit --help`\.$",
        ),
        (
            ["--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.qat={int3_weight_only: 0}",
             ],
            r"--trainer.callbacks.qat: expected a mapping, e.g. \{key: value\}, got '0'",
        ),
        (["--model.init_args.optimizer.init_args.lr", "fast"], r"--model.optimizer.init_args.lr: expected a number"),
    ],
    ids=["unknown-key", "misspelt-key", "wrong-type", "bad-value", "unknown-method", "unknown-sensitivity", "qat",
         "lr"],
)  # fmt: skip
def test_bad_config_is_one_line(extra, message, mnist_root, tmp_path, capsys):
    err = cli_error(capsys, "fit", *mnist_args(mnist_root, tmp_path), *extra)
    lines = [line for line in err.splitlines() if line != "Seed set to 0"]
    assert len(lines) == 1 and lines[0].startswith("error: "), err  # no usage block, no tree of types
    assert re.search(message, lines[0]), lines[0]
    assert not (tmp_path / "mnist_logistic").exists()  # nothing started, nothing written


def test_a_third_checkpoint_sharing_a_state_key_is_one_line(mnist_root, tmp_path, capsys):
    # base.yaml's best.ckpt (val/acc, max) and last.ckpt, then the user's own best-by-val/acc under another name
    def mine(monitor: str, mode: str) -> list[str]:
        return ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.filename=mybest", f"--trainer.callbacks.dirpath={tmp_path / 'ckpt'}",
                f"--trainer.callbacks.monitor={monitor}", f"--trainer.callbacks.mode={mode}"]  # fmt: skip

    args = [*mnist_args(mnist_root, tmp_path), *checkpoint_callback_args(tmp_path), "--trainer.max_epochs", "1"]
    line = cli_error(capsys, "fit", *args, *mine("val/acc", "max")).splitlines()[-1]
    assert re.match(
        r"^error: Two ModelCheckpoint callbacks \(filename 'best' and 'mybest'\) would save their state under one "
        r"key, ModelCheckpoint\{'monitor': 'val/acc', 'mode': 'max', .*give yours another monitor, mode or every_n",
        line,
    )
    assert not (tmp_path / "mnist_logistic").exists() and not (tmp_path / "ckpt").exists()
    # told apart by what they monitor, they train side by side
    main(["fit", *args, *mine("val/loss", "min")])
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"best.ckpt", "last.ckpt", "mybest.ckpt"}


@pytest.fixture
def bundles(mnist_root, tmp_path) -> dict[str, Path]:
    """An image bundle (MNIST's logistic regression) and a text bundle (a tiny MLP), untrained: only their kind
    of input and their classes matter here."""
    images = MNISTDataModule(str(mnist_root))
    net = LogisticRegression().net.eval()
    artifact = quantize(net, "onnx_dynamic_int8", QuantizationData(torch.zeros(1, 784)))
    image = write_bundle(tmp_path / "image", artifact, net, images.preprocessing(), [str(d) for d in range(10)])
    texts = TextDataModule(str(write_text_corpus(tmp_path / "corpus.csv")))
    net = MLP(input_dim=texts.input_dim, hidden_sizes=[8], num_classes=2).net.eval()
    artifact = quantize(net, "onnx_dynamic_int8", QuantizationData(torch.zeros(1, texts.input_dim)))
    text = write_bundle(tmp_path / "text", artifact, net, texts.preprocessing(), texts.classes)
    return {"image": image, "text": text}


def test_predict_with_a_bundle_of_another_input_kind_is_one_line(bundles, mnist_root, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("good car\n")
    corpus = tmp_path / "corpus.csv"
    text_config = text_args(corpus, tmp_path / "out", "--data.init_args.predict_path", str(texts))
    err = cli_error(capsys, "predict", *text_config, "--artifact", str(bundles["image"]))
    assert err.splitlines()[-1] == (
        "error: The bundle reads images (784 features), but the config's data, datamodules.TextDataModule, reads "
        "text. Predict with the config its model was trained with (its data reads images)."
    )
    idx = mnist_root / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    err = cli_error(capsys, "predict", *mnist_args(mnist_root, tmp_path / "out"), "--artifact", str(bundles["text"]),
                    "--inputs", str(idx))  # fmt: skip
    assert re.fullmatch(
        r"error: The bundle reads text \(\d+ features\), but the config's data, datamodules.MNISTDataModule, reads "
        r"images\. Predict with the config its model was trained with \(its data reads text\)\.",
        err.splitlines()[-1],
    )
    assert not (tmp_path / "out").exists()  # nothing written


def test_predict_with_a_bundle_of_other_classes_is_one_line(bundles, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("good car\n")
    args = text_args(tmp_path / "corpus.csv", tmp_path / "out", "--data.init_args.predict_path", str(texts))
    err = cli_error(capsys, "predict", *args, "--data.init_args.classes", "[negative,neutral,positive]",
                    "--artifact", str(bundles["text"]))  # fmt: skip
    assert err.splitlines()[-1] == (
        "error: The bundle predicts classes (negative, positive), --data.init_args.classes gives "
        "(negative, neutral, positive). Leave classes unset, or pass [negative,positive]."
    )
    assert not (tmp_path / "out").exists()


def _patch(path, offset: int, value: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] = value
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("file", "offset", "value", "message"),
    [
        (
            "train-labels-idx1-ubyte",
            8 + 7,
            11,
            r"^error: .*train-labels-idx1-ubyte holds label 11 at index 7 \(byte 15\)",
        ),
        ("t10k-labels-idx1-ubyte", 8 + 3, 255, r"^error: .*t10k-labels-idx1-ubyte holds label 255 at index 3"),
        ("train-images-idx3-ubyte", 15, 29, r"^error: .*train-images-idx3-ubyte header declares 600 images of 28x29"),
    ],
    ids=["train-label-11", "test-label-255", "header-28x29"],
)
def test_bad_mnist_file_stops_before_training(file, offset, value, message, mnist_root, tmp_path, capsys):
    _patch(mnist_root / "MNIST" / "raw" / file, offset, value)
    line = cli_error(capsys, "fit", *mnist_args(mnist_root, tmp_path)).splitlines()[-1]
    assert re.match(message, line)
    assert not list(tmp_path.glob("mnist_logistic/*/checkpoints"))  # refused before the first step


@pytest.mark.parametrize("extra", [["--trainer.max_epochs", "0"], ["--trainer.limit_train_batches", "0"]])
def test_training_nothing_is_refused(extra, mnist_root, tmp_path, capsys):
    line = cli_error(capsys, "fit", *mnist_args(mnist_root, tmp_path), *extra).splitlines()[-1]
    assert re.match(rf"^error: {extra[0]} 0 trains nothing, .* would describe an untrained model", line)
    assert not (tmp_path / "mnist_logistic").exists()


def test_long_field_limit_is_a_setting(tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "corpus.csv", n=40)
    with corpus.open("a", encoding="utf-8") as f:
        f.write('"' + "word " * 400 + '",positive\n')  # one 2,000-character text on line 42
    args = text_args(corpus, tmp_path, "--trainer.max_epochs", "1", "--data.init_args.max_field_chars", "1000")
    line = cli_error(capsys, "fit", *args).splitlines()[-1]
    assert re.match(
        rf"^error: {corpus}:42: a field longer than 1,000 characters.*--data\.init_args\.max_field_chars", line
    )


def test_ckpt_path_naming_a_directory_lists_its_checkpoints(mnist_root, tmp_path, capsys):
    run = tmp_path / "run" / "checkpoints"
    run.mkdir(parents=True)
    (run / "best.ckpt").write_bytes(b"")
    (run / "last.ckpt").write_bytes(b"")
    line = cli_error(capsys, "test", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(tmp_path / "run"))
    assert line.splitlines()[-1] == (
        f"error: Checkpoint {tmp_path / 'run'} is a directory (it holds checkpoints/best.ckpt, "
        "checkpoints/last.ckpt). Pass one .ckpt file to --ckpt_path."
    )


_CSV = b"text,label\ngood great car,positive\nbad awful road,negative\n"


@pytest.mark.parametrize(
    ("name", "content", "extra", "message"),
    [
        ("corpus", None, [], r"error: Text file .*corpus is a folder, not a file\. Pass the corpus file inside it"),
        ("corpus.csv.gz", gzip.compress(_CSV), [], r"error: .*corpus.csv.gz is gzip-compressed\. Decompress it first"),
        ("corpus.csv", gzip.compress(_CSV), [], r"error: .*corpus.csv is gzip-compressed\. Decompress it first"),
        ("corpus.csv", _CSV.replace(b",", b"\t"), [],
         r"error: .*corpus.csv looks tab-separated \(its header 'text\\tlabel' holds tabs, no commas\), but its name "
         r"ends in \.csv\. Rename it to \.tsv\.$"),
        ("corpus.csv", _CSV, ["--data.init_args.seed", "-1"], r"error: Expected `seed` >= 0, got -1\.$"),
    ],
    ids=["folder", "gzip", "gzip-named-csv", "tab-separated-csv", "negative-seed"],
)  # fmt: skip
def test_bad_corpus_round_5(name, content, extra, message, tmp_path, capsys):
    corpus = tmp_path / name
    corpus.mkdir() if content is None else corpus.write_bytes(content)
    args = text_args(corpus, tmp_path / "out", "--trainer.max_epochs", "1", *extra)
    lines = [line for line in cli_error(capsys, "fit", *args).splitlines() if line != "Seed set to 0"]
    assert len(lines) == 1 and re.match(message, lines[0]), lines
    assert content is None or corpus.read_bytes() == content
    assert not (tmp_path / "out").exists()  # nothing started, nothing written


@pytest.mark.parametrize("name", ["texts.txt", "texts.jsonl"])
def test_predict_on_an_empty_file_is_one_line(name, tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "corpus.csv")
    texts = tmp_path / name
    texts.write_bytes(b"")
    args = text_args(corpus, tmp_path / "out", "--data.init_args.predict_path", str(texts))
    lines = [line for line in cli_error(capsys, "predict", *args).splitlines() if line != "Seed set to 0"]
    assert lines == [
        f"error: No text to predict in {texts}: the file is empty. Pass a file that holds the texts (one per line, "
        "or CSV/TSV/JSON Lines rows)."
    ]


def test_json_lines_with_a_byte_order_mark_keep_their_first_row(tmp_path):
    rows = [{"text": "good great car", "label": "positive"}, {"text": "bad awful road", "label": "negative"}]
    path = tmp_path / "corpus.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(row) + "\n" for row in rows).encode())
    read = read_rows(path, "text", "label")
    assert read.texts == ["good great car", "bad awful road"] and read.lines == [1, 2] and not read.bad


def test_texts_without_spaces_under_a_word_pattern_warn_and_name_token_pattern(tmp_path):
    rng = np.random.default_rng(0)
    positive, negative = ["好", "棒", "喜欢", "开心", "漂亮"], ["坏", "差", "讨厌", "难过", "糟糕"]
    filler = ["今天", "汽车", "城市", "公交", "我的", "新的", "道路", "早上"]
    lines = ["text,label"]
    for i in range(200):  # Chinese as written: no spaces between words
        words = [*rng.choice(positive if i % 2 else negative, 2, replace=False), *rng.choice(filler, 3, replace=False)]
        lines.append("".join(rng.permutation(words)) + ("," + ("positive" if i % 2 else "negative")))
    corpus = tmp_path / "chinese.csv"
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning) as caught:
        assert TextDataModule(str(corpus)).input_dim == 140  # one term per training text
    assert [str(w.message) for w in caught] == [
        f"20 of 20 validation texts of {corpus} share no term with the 140-term training vocabulary, so the model "
        r"sees them as empty. If the texts do not separate words with spaces (Chinese, Japanese, Thai), token_pattern "
        r"'(?u)\b\w\w+\b' makes each sentence one term: pass --data.init_args.token_pattern '(?u)\w' (one character "
        "per term), e.g. with --data.init_args.ngram_range [1,2]."
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # characters (and pairs of them) as terms: shared, nothing to warn about
        assert TextDataModule(str(corpus), token_pattern=r"(?u)\w", ngram_range=(1, 2)).input_dim == 258


def test_invalid_token_pattern_is_one_line(tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "corpus.csv")
    err = cli_error(capsys, "fit", *text_args(corpus, tmp_path, "--data.init_args.token_pattern", "("))
    lines = [line for line in err.splitlines() if line != "Seed set to 0"]
    assert lines == [
        "error: Expected `token_pattern` a regular expression, got '(' "
        "(missing ), unterminated subpattern at position 0)."
    ], err
