"""Exact resume: a run SIGKILLed after epoch k and resumed from last.ckpt ends where an uninterrupted run ends."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.helpers import REPO, checkpoint_callback_args, mnist_args, text_args, write_text_corpus


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
