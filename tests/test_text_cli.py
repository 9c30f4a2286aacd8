"""The text pipeline through the CLI: fit, checkpointed vectorizer, resume, test, predict from raw text."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from cli import QuantlightCLI, main
from datamodules.text import TextDataModule
from datamodules.text_vectorizer import vectorizer_from_state
from errors import CheckpointError
from modules import MLP
from tests.helpers import text_args, write_text_corpus


def writer_args(output: Path) -> list[str]:
    return [
        "--trainer.callbacks+=callbacks.prediction_writer.PredictionWriter",
        f"--trainer.callbacks.output_path={output}",
    ]


@pytest.fixture
def trained(tmp_path: Path) -> tuple[Path, Path]:
    """A corpus and the last.ckpt of a 3-epoch fit on it."""
    corpus = write_text_corpus(tmp_path / "corpus.csv")
    main(["fit", *text_args(corpus, tmp_path, "--trainer.max_epochs", "3", "--test_after_fit", "false")])
    return corpus, tmp_path / "ckpt" / "last.ckpt"


def test_checkpoint_holds_the_vectorizer_as_plain_data(trained):
    corpus, ckpt = trained
    checkpoint = torch.load(ckpt, weights_only=True)  # no pickled scikit-learn objects
    state = checkpoint["TextDataModule"]
    assert state["classes"] == ["negative", "positive"]
    assert len(state["vectorizer"]["term_ends"]) == state["vectorizer"]["idf"].shape[0] == 28  # the packed vocabulary
    assert checkpoint["hyper_parameters"]["input_dim"] == 28
    fresh = TextDataModule(str(corpus))
    texts = fresh.split_rows("test").texts
    restored = vectorizer_from_state(state["vectorizer"], "test")
    assert abs(restored.transform(texts) - fresh.vectorize(texts)).max() == 0


def test_resume_serves_the_trained_vectors_after_the_vectorizer_settings_changed(trained, tmp_path):
    corpus, ckpt = trained
    trained_vectorizer = vectorizer_from_state(torch.load(ckpt, weights_only=True)["TextDataModule"]["vectorizer"], "t")
    # Other vectorizer settings (another corpus is refused: tests/test_resume.py): a refit would give other vectors.
    args = text_args(corpus, tmp_path, "--trainer.max_epochs", "4", "--test_after_fit", "false",
                     "--data.init_args.vectorizer", "count", "--ckpt_path", str(ckpt))  # fmt: skip
    cli = QuantlightCLI(args=["fit", *args])
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3
    texts = cli.datamodule.split_rows("train").texts
    served = cli.trainer.train_dataloader.dataset.features
    assert abs(served - trained_vectorizer.transform(texts).astype(np.float32)).max() == 0  # served as float32
    refit = TextDataModule(str(corpus), vectorizer="count")
    assert abs(refit.vectorize(texts) - trained_vectorizer.transform(texts)).max() > 0


def test_test_subcommand_restores_the_vectorizer(trained, tmp_path):
    corpus, ckpt = trained
    cli = QuantlightCLI(args=["test", *text_args(corpus, tmp_path), "--ckpt_path", str(ckpt)])
    assert cli.trainer.callback_metrics["test/acc"] >= 0.75  # the tiny corpus is easy


def test_predict_raw_text_without_the_training_corpus(trained, tmp_path):
    _, ckpt = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("good great car\nbad awful road\nnothing known here\n")
    output = tmp_path / "out" / "predictions.csv"
    args = text_args(tmp_path / "gone.csv", tmp_path, *writer_args(output))
    args += ["--data.init_args.predict_path", str(texts), "--data.init_args.vectorizer_checkpoint", str(ckpt)]
    main(["predict", *args, "--ckpt_path", str(ckpt)])
    with output.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert [row["line"] for row in rows] == ["1", "2", "3"]
    assert [row["label"] for row in rows[:2]] == ["positive", "negative"]
    assert rows[0]["text"] == "good great car"
    for row in rows:
        assert abs(float(row["prob_negative"]) + float(row["prob_positive"]) - 1) < 1e-5
    assert not list(output.parent.glob(".*.tmp"))  # written in place atomically


def test_predict_labelled_jsonl_skips_bad_rows_and_lists_them(trained, tmp_path):
    corpus, ckpt = trained
    inputs = tmp_path / "inputs.jsonl"
    records = [{"text": "good car", "label": "positive"}, {"text": " "}, {"text": "bad car", "label": "meh"}]
    inputs.write_text("\n".join(json.dumps(r) for r in records) + "\n")
    output = tmp_path / "predictions.jsonl"
    args = text_args(corpus, tmp_path, *writer_args(output), "--data.init_args.on_bad_row", "skip")
    with pytest.warns(UserWarning, match=r"Skipped 2 bad row\(s\): .*inputs.jsonl:2: empty text; .*:3: unknown label"):
        main(["predict", *args, "--data.init_args.predict_path", str(inputs), "--ckpt_path", str(ckpt)])
    written = [json.loads(line) for line in output.read_text().splitlines()]
    assert [r["line"] for r in written] == [1, 2, 3]
    assert written[0]["label"] == "positive" and set(written[0]["probabilities"]) == {"negative", "positive"}
    assert written[1] == {"line": 2, "error": "empty text"}
    assert written[2]["error"].startswith("unknown label 'meh'")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"good car\n\nbad car\n", r"texts.txt:2: empty text"),
        (b"good car\nbad \xff car\n", r"texts.txt:2: undecodable bytes"),
    ],
    ids=["empty", "undecodable"],
)
def test_predict_bad_row_is_one_line_error(trained, tmp_path, capsys, content, match):
    corpus, ckpt = trained
    texts = tmp_path / "texts.txt"
    texts.write_bytes(content)
    output = tmp_path / "predictions.csv"
    args = text_args(corpus, tmp_path, *writer_args(output), "--data.init_args.predict_path", str(texts))
    with pytest.raises(SystemExit) as exc:
        main(["predict", *args, "--ckpt_path", str(ckpt)])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: Bad row at ")
    assert re.search(match, err.splitlines()[-1])
    assert "Traceback" not in err and not output.exists()


def test_existing_prediction_file_is_never_overwritten(trained, tmp_path, capsys):
    corpus, ckpt = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("good car\n")
    output = tmp_path / "mine.csv"
    output.write_text("precious\n")
    args = text_args(corpus, tmp_path, *writer_args(output), "--data.init_args.predict_path", str(texts))
    with pytest.raises(SystemExit):
        main(["predict", *args, "--ckpt_path", str(ckpt)])
    assert "mine.csv already exists and is kept" in capsys.readouterr().err
    assert output.read_text() == "precious\n"


def test_checkpoint_vectorizer_wins_over_other_settings(trained, tmp_path):
    corpus, ckpt = trained
    # Fitting anew with max_features=10 would give 10 columns; the checkpoint's 28-term vectorizer is used.
    args = text_args(corpus, tmp_path, "--data.init_args.max_features", "10")
    cli = QuantlightCLI(args=["test", *args, "--ckpt_path", str(ckpt)])
    assert cli.datamodule.input_dim == cli.model.hparams.input_dim == 28
    assert cli.trainer.callback_metrics["test/acc"] >= 0.75


def test_width_mismatch_is_named_when_loading_outside_the_cli(trained):
    _, ckpt = trained
    model = MLP(input_dim=10, hidden_sizes=[16], num_classes=2)  # as text_args trains it
    with pytest.raises(
        CheckpointError,
        match=r"net\.0\.weight has shape \(16, 28\), the model built for this data has \(16, 10\)"
        r".*vectorizer_checkpoint",
    ):
        model.on_load_checkpoint(torch.load(ckpt, weights_only=True))


def test_ckpt_path_alone_is_enough_for_predict(trained, tmp_path):
    _, ckpt = trained
    texts = tmp_path / "texts.txt"
    texts.write_text("great good\n")
    output = tmp_path / "p.csv"
    args = text_args(tmp_path / "gone.csv", tmp_path, *writer_args(output), "--data.init_args.predict_path", str(texts))
    cli = QuantlightCLI(args=["predict", *args, "--ckpt_path", str(ckpt)])
    assert cli.datamodule.hparams.vectorizer_checkpoint == str(ckpt)
    assert "positive" in output.read_text()
