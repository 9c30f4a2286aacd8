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
