"""Quantization-aware training (QAT) as a Lightning step of its own, after ``fit``.

A copy of the trained module, its Linear layers training through the target method's fake
quantization (``quantization.qat``), is fine-tuned by a second, single-process ``Trainer`` in
``<run>/qat/<method>/<source>/`` with its own ``checkpoints/last.ckpt``: the live module is
never converted, so ``test --ckpt_path``, a second ``fit`` and DDP are unaffected. A run killed
during QAT resumes it, bit for bit, from that ``last.ckpt`` when ``fit --ckpt_path`` re-enters.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torchmetrics import Metric

from modules.base import FineTuning
from quantization.qat import prepare_qat
from storage.checkpoints import load_net_weights


@dataclass(frozen=True)
class QATSettings:
    """How a method's quantization-aware fine-tuning runs.

    Args:
        epochs: Fine-tuning epochs, starting from the best checkpoint.
        lr_scale: The recipe's optimizer runs at this fraction of its learning rate, cosine-annealed to
            0 over ``epochs``. 1/8 (0.125): on MNIST 3-bit per channel (2 seeds, 10 epochs), 1/4 and 1/2
            of AdamW's 4e-3 ended 0.1-0.5 points lower, weights hopping between grid points; compare
            with ``python benchmarks/qat.py --lr-scale 0.25``.
    """

    epochs: int = 10
    lr_scale: float = 0.125

    @classmethod
    def from_values(cls, method: str, values: dict[str, Any] | None) -> QATSettings:
        """The settings from plain config values, refusing an unknown key in one line."""
        unknown = sorted(set(values or {}) - {"epochs", "lr_scale"})
        if unknown:
            raise ValueError(f"Expected `qat.{method}` keys in (epochs, lr_scale), got {unknown[0]!r}.")
        return cls(**(values or {}))

    def __post_init__(self) -> None:
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"Expected `qat.<method>.epochs` an integer >= 1, got {self.epochs!r}.")
        if not (isinstance(self.lr_scale, (int, float)) and math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ValueError(f"Expected `qat.<method>.lr_scale` > 0, got {self.lr_scale!r}.")


def close_live_display(trainer: Trainer, pl_module: LightningModule) -> None:
    """End the main run's live progress display (its finished bars stay on screen) before QAT's trainer opens
    its own on the same console: a rich display left open underneath would lose its place on the console's
    stack of live displays and fail when the main run tears it down. Lightning re-opens it for ``test``."""
    if trainer.progress_bar_callback is not None:
        trainer.progress_bar_callback.teardown(trainer, pl_module, "fit")


class RunsInQAT:
    """Mixin for a callback of the main run that should also run in the QAT fine-tuning (e.g. a custom
    logger or a fault injector); the QAT trainer's ``default_root_dir`` is its folder."""


def qat_folder(root: str | Path, method: str, net: nn.Module, method_settings: Any, qat: QATSettings) -> Path:
    """``<root>/qat/<method>/<digest>``: the digest covers the starting weights and every setting, so a
    resumed run finds its own checkpoints and a changed best checkpoint or setting starts afresh."""
    digest = hashlib.sha256(json.dumps([asdict(method_settings), asdict(qat)], sort_keys=True).encode())
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return Path(root) / "qat" / method / digest.hexdigest()[:12]


class _RunData(LightningDataModule):
    """The run's datamodule as the QAT trainer sees it: its splits, loaders and state, but no
    ``prepare_data`` (the run did that; Lightning would wait for every DDP rank around it, and the other
    ranks sit at the main run's barrier)."""

    def __init__(self, datamodule: LightningDataModule) -> None:
        super().__init__()
        self.run_data = datamodule

    def setup(self, stage: str) -> None:
        self.run_data.trainer = self.trainer  # loaders shard by the QAT trainer's world size: one process
        self.run_data.setup(stage)

    def train_dataloader(self):
        return self.run_data.train_dataloader()

    def val_dataloader(self):
        return self.run_data.val_dataloader()

    def state_dict(self) -> dict:
        return self.run_data.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.run_data.load_state_dict(state_dict)


def detached_copy(pl_module: LightningModule) -> LightningModule:
    """A deep copy of ``pl_module`` for a trainer of its own: its optimizer factories shared (they are
    stateless callables), and without the instance-level ``forward`` redirect a DDP strategy installs
    (it holds process-group locks, and the copy must run its own class's forward)."""
    state = vars(pl_module)
    shared = [state[k] for k in ("optimizer_factory", "lr_scheduler_factory") if k in state]
    redirects = [k for k, v in state.items() if inspect.ismethod(v)]
    memo = {id(v): v for v in shared} | {id(state[k]): None for k in redirects}
    module = copy.deepcopy(pl_module, memo)  # Lightning drops the trainer reference from the copy
    for key in redirects:
        vars(module).pop(key, None)
    return module


def fine_tune_qat(
    trainer: Trainer,
    pl_module: LightningModule,
    datamodule: LightningDataModule,
    net: nn.Module,
    method: str,
    method_settings: Any,
    qat: QATSettings,
    root: str | Path,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune ``net`` (fp32, the best checkpoint's weights) with ``method``'s fake quantization.

    Args:
        trainer: The main run's trainer (progress bar, batch limits and callbacks marked :class:`RunsInQAT`).
        pl_module: The main run's module: deep-copied for its loss, metrics and optimizer; never changed.
        datamodule: The run's data (train and validation splits).
        net: The plain fp32 net to start from; only read.
        method: The target method; ``method_settings`` its settings (the artifact's arithmetic).
        qat: Epochs and learning rate.
        root: The run's folder: checkpoints and TensorBoard logs go in :func:`qat_folder` under it.

    Returns:
        A plain fp32 copy of ``net`` with the final QAT weights (quantize it with ``method`` to get exactly
        the model QAT trained), and row fields for the report. The final epoch, not the best on validation:
        the learning rate has annealed to 0 there, and the validation split stays an unbiased judge of the
        ``+qat`` row against the accuracy budget.
    """
    folder = qat_folder(root, method, net, method_settings, qat)
    module = detached_copy(pl_module)
    module._pending_rng_states = None  # a resumed main run's RNG states are not QAT's (QAT resumes its own)
    torch.manual_seed(int(folder.name, 16))  # the same QAT draws (dropout) for the same source and settings
    module.net = prepare_qat(net, method, method_settings)
    module.fine_tuning = FineTuning(qat.lr_scale, qat.epochs)
    module._metric_attributes = None  # Lightning's cache of id(metric) -> name: the copy's metrics are new objects
    for metric in module.modules():
        if isinstance(metric, Metric):  # one process: never wait for ranks that sit at the main run's barrier
            metric.sync_on_compute = metric._to_sync = False
    checkpoints = folder / "checkpoints"
    last = ModelCheckpoint(checkpoints, "last", enable_version_counter=False)
    limits = {
        name: getattr(trainer, name)
        for name in ("limit_train_batches", "limit_val_batches")
        if getattr(trainer, name) != 1.0  # the main run's limits hold here too
    }
    close_live_display(trainer, pl_module)
    rank_zero_info(f"Quantization-aware training for {method}: {qat.epochs} epoch(s) in {folder}")
    inner = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=qat.epochs,
        logger=TensorBoardLogger(folder.parent, name="", version=folder.name, default_hp_metric=False),
        callbacks=[last, *(c for c in trainer.callbacks if isinstance(c, RunsInQAT))],
        enable_progress_bar=trainer.progress_bar_callback is not None,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=folder,
        **limits,
    )
    resume = checkpoints / "last.ckpt"
    try:
        inner.fit(module, datamodule=_RunData(datamodule), ckpt_path=resume if resume.is_file() else None)
    finally:
        datamodule.trainer = trainer
    trained = copy.deepcopy(net)
    trained.load_state_dict(load_net_weights(resume, pl_module))
    info = {"qat_epochs": qat.epochs, "qat_lr_scale": qat.lr_scale, "qat_checkpoint": str(resume)}
    return trained.eval(), info
