"""Resume: a run SIGKILLed after epoch k and resumed from last.ckpt ends where an uninterrupted run ends; a resume
on other data is refused before anything is written; predict writes into the checkpoint's run."""

from __future__ import annotations

import hashlib
import logging
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import (
    REPO,
    checkpoint_callback_args,
    cli_error,
    main,
    mnist_args,
    text_args,
    write_text_corpus,
)


def run_cli(*args: str, expect_kill: bool = False) -> None:
    proc = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    expected = -signal.SIGKILL if expect_kill else 0
    assert proc.returncode == expected, proc.stderr[-3000:]


@pytest.mark.slow
def test_killed_and_resumed_run_matches_uninterrupted(mnist_root: Path, tmp_path: Path):
    def args(out: Path, *extra: str) -> list[str]:
        return [
            "fit", *mnist_args(mnist_root, out, "--trainer.max_epochs", "4", "--data.batch_size", "32"),
            *checkpoint_callback_args(out), "--test_after_fit", "false", *extra,
        ]  # fmt: skip

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_cli(*args(whole))
    kill = ["--trainer.callbacks+=tests.faults.KillAtEpoch", "--trainer.callbacks.epoch=2"]
    run_cli(*args(broken, *kill), expect_kill=True)
    last = broken / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1  # died after two whole epochs
    run_cli(*args(broken, "--ckpt_path", str(last)))

    expected = torch.load(whole / "ckpt" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == expected["epoch"] == 3
    assert resumed["global_step"] == expected["global_step"]
    assert expected["state_dict"].keys() == resumed["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    states = [c["optimizer_states"][0]["state"] for c in (expected, resumed)]
    assert states[0].keys() == states[1].keys() and len(states[0]) == 2  # weight and bias
    for param, state in states[0].items():
        for name, value in state.items():  # AdamW: step, exp_avg, exp_avg_sq
            assert torch.equal(value, states[1][param][name]), (param, name)


@pytest.mark.slow
def test_killed_and_resumed_text_run_matches_uninterrupted(tmp_path: Path):
    corpus = write_text_corpus(tmp_path / "corpus.csv")
    # Dropout draws from the torch RNG every step: equality needs the RNG state restored, not only weights.
    extra = ["--trainer.max_epochs", "4", "--model.init_args.dropout", "0.3", "--test_after_fit", "false"]

    def args(out: Path, *more: str) -> list[str]:
        return ["fit", *text_args(corpus, out, *extra), *more]

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_cli(*args(whole))
    run_cli(
        *args(broken, "--trainer.callbacks+=tests.faults.KillAtEpoch", "--trainer.callbacks.epoch=2"), expect_kill=True
    )
    last = broken / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["epoch"] == 1
    run_cli(*args(broken, "--ckpt_path", str(last)))

    expected = torch.load(whole / "ckpt" / "last.ckpt", weights_only=True)
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == expected["epoch"] == 3
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
    # The recipe's sparse first layer: its rows' group (plain SGD) has no state, the rest has momentum buffers.
    states = [c["optimizer_states"][0] for c in (expected, resumed)]
    assert [g["momentum"] for g in states[0]["param_groups"]] == [0.0, 0.9]
    assert states[0]["state"].keys() == states[1]["state"].keys() and len(states[0]["state"]) == 3  # bias, head
    for param, state in states[0]["state"].items():
        assert torch.equal(state["momentum_buffer"], states[1]["state"][param]["momentum_buffer"]), param
    vectorizers = [c["TextDataModule"]["vectorizer"] for c in (expected, resumed)]
    assert torch.equal(vectorizers[0]["terms"], vectorizers[1]["terms"])
    assert torch.equal(vectorizers[0]["term_ends"], vectorizers[1]["term_ends"])
    assert torch.equal(vectorizers[0]["idf"], vectorizers[1]["idf"])


def test_nan_loss_stops_with_one_line_and_keeps_best_checkpoint(mnist_root: Path, tmp_path: Path):
    args = [
        "fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "3"), *checkpoint_callback_args(tmp_path),
        "--trainer.callbacks+=tests.faults.PoisonAtEpoch", "--trainer.callbacks.epoch=1",
    ]  # fmt: skip
    proc = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: Training loss became nan at epoch 1, step 8.")
    best = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=True)
    assert best["epoch"] == 0
    assert all(torch.isfinite(value).all() for value in best["state_dict"].values())


# --- a resumed fit is given the data it was trained on; a refused one writes nothing -------------------------


def run_args(corpus: Path, out: Path, *extra: str) -> list[str]:
    """configs/text_mlp.yaml on a tiny corpus, one epoch, checkpoints in the run's folder (what `--ckpt_path
    <run>/checkpoints/last.ckpt` resumes into), the report and bundle of fp32 alone."""
    return [
        "-c", str(REPO / "configs/text_mlp.yaml"), "--data.init_args.path", str(corpus),
        "--data.init_args.batch_size", "8", "--model.init_args.hidden_sizes", "[8]",
        "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false",
        "--trainer.max_epochs", "1", "--trainer.callbacks", "[]", *checkpoint_callback_args(None),
        "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[fp32]",
        "--trainer.callbacks.prune=null", "--trainer.callbacks.latency_batch_sizes=[1]",
        "--trainer.callbacks.min_run_time_s=0.01", *extra,
    ]  # fmt: skip


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture(scope="module")
def text_run(tmp_path_factory) -> Path:
    """A one-epoch text run with its checkpoints, report and bundle: runs/text_mlp/version_0."""
    tmp = tmp_path_factory.mktemp("run")
    main(["fit", *run_args(write_text_corpus(tmp / "corpus.csv"), tmp / "runs")])
    run = tmp / "runs" / "text_mlp" / "version_0"
    assert {
        "config.yaml",
        "checkpoints/last.ckpt",
        "quantization/report.json",
        "quantization/bundle/bundle.json",
    } <= set(hashes(run))
    return run


def test_resuming_on_another_corpus_is_refused_and_overwrites_nothing(text_run, tmp_path, capsys):
    other = write_text_corpus(tmp_path / "other.csv", seed=5)  # the same words, other texts
    before = hashes(text_run.parent.parent)
    ckpt = text_run / "checkpoints" / "last.ckpt"
    args = run_args(other, text_run.parents[2] / "runs", "--trainer.max_epochs", "2", "--ckpt_path", str(ckpt))
    lines = [line for line in cli_error(capsys, "fit", *args).splitlines() if line != "Seed set to 0"]
    assert lines == [
        f"error: Checkpoint {ckpt} was trained on {text_run.parents[2] / 'corpus.csv'} (seed 0; train 56, val 8, "
        f"test 16), but this fit reads {other} (seed 0; train 56, val 8, test 16): other data or another split, and "
        "resuming would mix them. Resume with the data it was trained on, or start a new run without --ckpt_path."
    ]
    assert hashes(text_run.parent.parent) == before  # config.yaml, checkpoints, report and bundle: byte for byte
    args = run_args(text_run.parents[2] / "corpus.csv", text_run.parents[2] / "runs", "--data.init_args.seed", "1")
    line = cli_error(capsys, "fit", *args, "--ckpt_path", str(ckpt)).splitlines()[-1]
    assert "(seed 0; train 56, val 8, test 16), but this fit reads" in line and "(seed 1; " in line  # another split
    assert hashes(text_run.parent.parent) == before


def test_an_allowed_resume_keeps_the_earlier_config(text_run, tmp_path):
    shutil.copytree(text_run.parents[2], tmp_path / "copy")
    run = tmp_path / "copy" / "runs" / "text_mlp" / "version_0"
    earlier = (run / "config.yaml").read_bytes()
    moved = (tmp_path / "copy" / "corpus.csv").rename(tmp_path / "moved.csv")  # the same rows, elsewhere
    args = run_args(moved, tmp_path / "copy" / "runs", "--trainer.max_epochs", "2", "--test_after_fit", "false")
    main(["fit", *args, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1  # resumed: two epochs
    assert (run / "config.1.yaml").read_bytes() == earlier
    assert "max_epochs: 2" in (run / "config.yaml").read_text() and "max_epochs: 1" in earlier.decode()
    assert sorted(p.name for p in run.parent.iterdir()) == ["version_0"]


def test_resuming_mnist_on_another_split_is_refused(mnist_root: Path, tmp_path: Path, capsys):
    args = ["fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1"), *checkpoint_callback_args(tmp_path)]
    main([*args, "--test_after_fit", "false"])
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    before = hashes(tmp_path)
    line = cli_error(capsys, *args, "--data.val_size", "50", "--ckpt_path", str(ckpt)).splitlines()[-1]
    raw = mnist_root / "MNIST" / "raw"
    assert line.startswith(
        f"error: Checkpoint {ckpt} was trained on {raw} (seed 0; train 500, val 100, test 200), but this fit reads "
        f"{raw} (seed 0; train 550, val 50, test 200): other data or another split"
    )
    assert hashes(tmp_path) == before


def test_predict_writes_into_the_checkpoint_s_run_and_says_where(text_run, tmp_path, caplog):
    texts = tmp_path / "texts.txt"
    texts.write_text("good great car\n\nbad awful road\n")
    args = [*run_args(tmp_path / "no-corpus.csv", text_run.parents[2] / "runs"), "--data.init_args.on_bad_row", "skip"]
    args += ["--trainer.callbacks+=callbacks.PredictionWriter", "--data.init_args.predict_path", str(texts)]
    config = (text_run / "config.yaml").read_bytes()
    written = []
    checkpoint, bundle = (
        ["--ckpt_path", str(text_run / "checkpoints" / "last.ckpt")],
        ["--artifact", str(text_run / "quantization" / "bundle")],
    )
    for source in (checkpoint, checkpoint, bundle):  # the bundle at <run>/quantization/bundle: into its run too
        with pytest.warns(UserWarning, match=r"Skipped 1 bad row"), caplog.at_level(logging.INFO):
            main(["predict", *args, *source])
        written.append([r.getMessage() for r in caplog.records if r.getMessage().startswith("Wrote ")][-1])
    assert written == [
        f"Wrote 3 rows (1 of them bad, listed with the reason) to {text_run / name}"
        for name in ("predictions.csv", "predictions.1.csv", "predictions.2.csv")
    ]
    assert (text_run / "predictions.csv").read_bytes() == (text_run / "predictions.1.csv").read_bytes()
    assert sorted(p.name for p in text_run.parent.iterdir()) == ["version_0"]  # no new version_N
    assert (text_run / "config.yaml").read_bytes() == config  # the run's training config, kept
