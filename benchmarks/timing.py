"""Shared pieces of the epoch-time benchmarks: a per-epoch timer callback and the printed table."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch import Callback

from callbacks import PostTrainingQuantization
from cli import QuantlightCLI


class EpochTimer(Callback):
    """Wall time from one training epoch's start to the next (validation and checkpointing included)."""

    def __init__(self) -> None:
        self.starts: list[float] = []

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append(time.perf_counter())

    @property
    def epochs(self) -> list[float]:
        return [b - a for a, b in zip(self.starts, self.starts[1:], strict=False)]


def print_epochs(title: str, results: dict[str, list[float]]) -> list[float]:
    """Print each loop's median seconds per epoch (and every epoch); return the medians in order."""
    medians = [statistics.median(times) for times in results.values()]
    print(f"\n{title}")
    for (name, times), median in zip(results.items(), medians, strict=True):
        print(f"  {name:42s} {median:7.3f} s/epoch  (epochs: {', '.join(f'{t:.2f}' for t in times)})")
    return medians


def fit_epochs(config: str, *overrides: str) -> list[float]:
    """Seconds per epoch of ``fit`` with ``config`` as a user runs it (its logger, checkpoints and
    progress bar), the quantization report left out: it runs after training."""
    return fit_run(config, *overrides)[0]


def fit_run(config: str, *overrides: str) -> tuple[list[float], int]:
    """:func:`fit_epochs`, and the epoch (from 0) of the best checkpoint."""
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        best = torch.load(fit_checkpoint(config, out, *overrides, timer=timer), weights_only=True)["epoch"]
    return timer.epochs, best


def fit_checkpoint(config: str, out: str, *overrides: str, timer: EpochTimer | None = None) -> Path:
    """Train ``config`` (relative to the repository) as a user runs it, the quantization report left out (it
    runs after training), into ``out``; its best checkpoint. ``timer`` times its epochs."""
    config = str(Path(__file__).resolve().parents[1] / config)
    cli = QuantlightCLI(args=["-c", config, "--trainer.logger.init_args.save_dir", out, *overrides], run=False)
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, PostTrainingQuantization)]
    if timer is not None:
        cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return Path(cli.trainer.checkpoint_callback.best_model_path)
