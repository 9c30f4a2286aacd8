"""Quantization-aware training (QAT) as a Lightning step of its own, after ``fit``.

A copy of the trained module, its Linear layers training through the target method's fake
quantization (``quantization.candidates.qat``), is fine-tuned by a second, single-process ``Trainer`` in
``<run>/qat/<method>/<source>/`` with its own ``checkpoints/last.ckpt``: the live module is
never converted, so ``test --ckpt_path``, a second ``fit`` and DDP are unaffected. A run killed
during QAT resumes it, bit for bit, from that ``last.ckpt`` when ``fit --ckpt_path`` re-enters.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from torch import nn

from callbacks.fine_tuning import FineTuneSettings, RunsInQAT, detached_copy, digest_folder, fine_tune, seed_from
from quantization.candidates.qat import prepare_qat
from storage.checkpoints import load_net_weights

__all__ = ["QATSettings", "RunsInQAT", "fine_tune_qat", "qat_folder"]


@dataclass(frozen=True)
class QATSettings(FineTuneSettings):
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
    def kind(cls) -> str:
        return "qat.<method>"

    @classmethod
    def from_values(cls, method: str, values: dict[str, Any] | None) -> QATSettings:
        """The settings from plain config values, refusing an unknown key in one line."""
        unknown = sorted(set(values or {}) - {"epochs", "lr_scale"})
        if unknown:
            raise ValueError(f"Expected `qat.{method}` keys in (epochs, lr_scale), got {unknown[0]!r}.")
        return cls(**(values or {}))


def qat_folder(root: str | Path, method: str, net: nn.Module, method_settings: Any, qat: QATSettings) -> Path:
    """``<root>/qat/<method>/<digest>``: the digest covers the starting weights and every setting, so a
    resumed run finds its own checkpoints and a changed best checkpoint or setting starts afresh."""
    return digest_folder(root, "qat", method, net, [method_settings, qat])


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
    seed_from(folder)
    module.net = prepare_qat(net, method, method_settings)
    title = f"Quantization-aware training for {method}"
    resume = fine_tune(trainer, module, datamodule, folder, qat, title)
    trained = copy.deepcopy(net)
    trained.load_state_dict(load_net_weights(resume, pl_module))
    info = {"qat_epochs": qat.epochs, "qat_lr_scale": qat.lr_scale, "qat_checkpoint": str(resume)}
    return trained.eval(), info
