"""Bad input through the CLI: exit status 2, a clear message, no traceback, the user's files untouched."""

from __future__ import annotations

import re

import pytest

from tests.helpers import cli_error, mnist_args, text_args, write_text_corpus


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


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--model.init_args.no_such_arg", "1"], r"no_such_arg"),
        (["--trainer.max_epochs", "many"], r"max_epochs"),
        (["--data.batch_size", "0"], r"(?m)^error: Expected `batch_size` >= 1, got 0.$"),
        (
            ["--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[fp32, int3]"],
            r"int3",
        ),
    ],
    ids=["unknown-key", "wrong-type", "bad-value", "unknown-quant-method"],
)
def test_bad_config(extra, message, mnist_root, tmp_path, capsys):
    err = cli_error(capsys, "fit", *mnist_args(mnist_root, tmp_path), *extra)
    assert re.search(message, err)
    assert not (tmp_path / "mnist_logistic").exists()  # nothing started, nothing written


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
