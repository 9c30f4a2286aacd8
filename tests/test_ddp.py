"""DDP on CPU: two gloo processes train, metrics are synchronized across ranks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from datamodules.mnist import MNISTDataModule
from modules import LogisticRegression
from tests.test_cli import REPO, checkpoint_callback_args, mnist_args


@pytest.mark.slow
def test_ddp_two_cpu_processes(mnist_root: Path, tmp_path: Path):
    args = [
        "fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1", "--data.batch_size", "16"),
        *checkpoint_callback_args(tmp_path), "--model.init_args.optimizer.init_args.lr", "0.0002",
        "--trainer.strategy", "ddp", "--trainer.devices", "2", "--test_after_fit", "false",
    ]  # fmt: skip
    proc = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

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
