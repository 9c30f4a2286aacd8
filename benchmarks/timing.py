"""Shared pieces of the epoch-time benchmarks: a per-epoch timer callback, a timed ``fit`` and the printed table."""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from lightning.pytorch import Callback, LightningDataModule

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run alone too (make bench): a no-op

from callbacks import PostTrainingQuantization
from cli import QuantlightCLI


class EpochTimer(Callback):
    """Wall time from one training epoch's start to the next (validation and checkpointing included), and the
    process's CPU time over the same spans (steadier than wall time when other jobs share the cores)."""

    def __init__(self) -> None:
        self.starts: list[tuple[float, float]] = []
        self.validations: list[tuple[float, float]] = []  # (time.time(), val/acc) after each epoch's validation

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_train_end(self, trainer, pl_module) -> None:
        self.starts.append((time.perf_counter(), time.process_time()))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and "val/acc" in trainer.callback_metrics:
            self.validations.append((time.time(), float(trainer.callback_metrics["val/acc"])))

    @property
    def epochs(self) -> list[float]:
        return [b[0] - a[0] for a, b in zip(self.starts, self.starts[1:], strict=False)]

    @property
    def cpu_epochs(self) -> list[float]:
        return [b[1] - a[1] for a, b in zip(self.starts, self.starts[1:], strict=False)]


@dataclass
class FitTiming:
    """One timed ``fit``: seconds per epoch (wall and CPU), its best epoch (from 0), the seconds from the start
    (the CLI reading the corpus and fitting the vectorizer included) to the best checkpoint's last write and to
    the end of ``fit``."""

    epochs: list[float]
    cpu_epochs: list[float]
    best_epoch: int
    to_best_s: float
    fit_s: float
    datamodule: LightningDataModule  # the run's data, its vectorizer fitted
    validations: list[tuple[float, float]]  # (seconds from the start, val/acc) after each epoch

    def seconds_to_val_acc(self, target: float) -> tuple[int, float] | None:
        """``(epoch from 1, seconds from the start)`` of the first validation at ``target`` or above, or ``None``."""
        for epoch, (seconds, acc) in enumerate(self.validations, 1):
            if acc >= target:
                return epoch, seconds
        return None


def fit_epochs(config: str, *overrides: str) -> list[float]:
    """Seconds per epoch of ``fit`` with ``config`` as a user runs it (its logger, checkpoints and
    progress bar), the quantization report left out: it runs after training."""
    return fit_run(config, *overrides).epochs


def fit_run(config: str, *overrides: str) -> FitTiming:
    """:func:`fit_epochs`, with the best epoch and the seconds to its checkpoint (:class:`FitTiming`)."""
    timer = EpochTimer()
    with tempfile.TemporaryDirectory() as out:
        start = time.time()
        cli = fit_cli(config, out, *overrides, timer=timer)  # reading the corpus, fitting the vectorizer: timed too
        fit_s = time.time() - start
        best_path = cli.trainer.checkpoint_callback.best_model_path
        to_best_s = os.path.getmtime(best_path) - start
        best = torch.load(best_path, weights_only=True)["epoch"]
    validations = [(t - start, acc) for t, acc in timer.validations]
    return FitTiming(timer.epochs, timer.cpu_epochs, best, to_best_s, fit_s, cli.datamodule, validations)


def fit_checkpoint(config: str, out: str, *overrides: str) -> Path:
    """Train ``config`` as a user runs it, the quantization report left out (it runs after training), into
    ``out``; its best checkpoint."""
    return Path(fit_cli(config, out, *overrides).trainer.checkpoint_callback.best_model_path)


def fit_cli(config: str, out: str, *overrides: str, timer: EpochTimer | None = None) -> QuantlightCLI:
    """``fit`` of ``config`` (relative to the repository) with its logger in ``out``, without the quantization
    report; ``timer`` times its epochs. The CLI, its trainer fitted."""
    config = str(Path(__file__).resolve().parents[1] / config)
    cli = QuantlightCLI(args=["-c", config, "--trainer.logger.init_args.save_dir", out, *overrides], run=False)
    cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, PostTrainingQuantization)]
    if timer is not None:
        cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli


def print_epochs(title: str, results: dict[str, list[float]]) -> list[float]:
    """Print each loop's median seconds per epoch (and every epoch); return the medians in order."""
    medians = [statistics.median(times) for times in results.values()]
    print(f"\n{title}")
    for (name, times), median in zip(results.items(), medians, strict=True):
        print(f"  {name:44s} {median:7.3f} s/epoch  (epochs: {', '.join(f'{t:.2f}' for t in times)})")
    return medians
