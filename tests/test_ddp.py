"""DDP on CPU: two gloo processes train both models, metrics are synchronized, quantization runs once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.mnist import MNISTDataModule
from modules import LogisticRegression
from tests.helpers import REPO, checkpoint_callback_args, mnist_args, text_args, write_text_corpus

# A quick quantization report: two methods, one batch size, short timing.
QUANT_ARGS = [
    "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[fp32, dynamic_int8]",
    "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.02",
]  # fmt: skip
DDP_ARGS = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--test_after_fit", "false"]


def run_ddp(args: list[str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [sys.executable, "cli.py", "fit", *args, *DDP_ARGS], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-6000:]
    return proc


@pytest.mark.slow
def test_ddp_two_cpu_processes(mnist_root: Path, tmp_path: Path):
    args = [
        *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1", "--data.batch_size", "16"),
        *checkpoint_callback_args(tmp_path), "--model.init_args.optimizer.init_args.lr", "0.0002", *QUANT_ARGS,
    ]  # fmt: skip
    proc = run_ddp(args)

    best = torch.load(tmp_path / "ckpt" / "best.ckpt", weights_only=True)
    logged = next(state["best_model_score"] for state in best["callbacks"].values() if "best_model_score" in state)
    # Recompute val accuracy over the whole val split in one process: equal only if both ranks' halves were merged.
    model = LogisticRegression()
    model.load_state_dict(best["state_dict"])
    dm = MNISTDataModule(data_dir=mnist_root, download=False, val_size=100)
    dm.setup("fit")
    x, y = dm.datasets["val"].features, dm.datasets["val"].labels
    with torch.inference_mode():
        accuracy = (model(x).argmax(-1) == y).float().mean()
    assert 0.2 < accuracy < 1.0  # a partly trained model, so the check can tell halves apart
    assert logged.item() == pytest.approx(accuracy.item(), abs=1e-6)

    # The report is written once, by rank zero, from the best checkpoint; rank one waited and wrote nothing.
    report = tmp_path / "mnist_logistic" / "version_0" / "quantization"
    written = ["bundle", "dynamic_int8.pt", "fp32.pt", "report.json", "report.md"]  # bundle: the recommended row
    assert sorted(p.name for p in report.iterdir()) == written
    assert (proc.stdout + proc.stderr).count("Quantization report (2 rows") == 1
    assert sorted(p.name for p in (tmp_path / "mnist_logistic").iterdir()) == ["version_0"]


@pytest.mark.slow
def test_ddp_two_cpu_processes_text(tmp_path: Path):
    corpus = write_text_corpus(tmp_path / "corpus.csv", n=160)
    prune = "--trainer.callbacks.prune={sizes: [{terms: 12, hidden: 8}], epochs: 2, methods: [fp32]}"
    proc = run_ddp([*text_args(corpus, tmp_path, "--trainer.max_epochs", "2"), *QUANT_ARGS, prune])
    output = proc.stdout + proc.stderr
    assert output.count("Quantization report (3 rows") == 1  # the pruned model fine-tuned once, on rank zero
    assert output.count("Vocabulary pruning to 12 terms and 8 units") == 1
    checkpoint = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert checkpoint["epoch"] == 1 and "TextDataModule" in checkpoint
    run = tmp_path / "text_mlp" / "version_0"
    rows = [row["method"] for row in json.loads((run / "quantization" / "report.json").read_text())["methods"]]
    assert rows == ["fp32", "dynamic_int8", "fp32+prune12x8"]
    (folder,) = (run / "prune" / "prune12x8").iterdir()  # the whole training split, one process: epoch 1 of 2 done
    assert torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 1
