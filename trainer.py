"""A Trainer with a ``quantize`` entry point, so ``python cli.py quantize`` reports on an existing checkpoint."""

from __future__ import annotations

from typing import Any

from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from callbacks.post_training_quantization import PostTrainingQuantization
from errors import CheckpointError


class QuantlightTrainer(Trainer):
    """Lightning's Trainer plus :meth:`quantize`."""

    def quantize(
        self, model: LightningModule, datamodule: LightningDataModule, ckpt_path: str | None = None
    ) -> list[dict[str, Any]]:
        """Run the post-training quantization report on a checkpoint, without training.

        Uses the ``PostTrainingQuantization`` in ``trainer.callbacks`` (all methods when there is none).

        Args:
            model: The configured model; the checkpoint's weights go into a copy of its ``net``.
            datamodule: Data whose test split is measured (and train split calibrates).
            ckpt_path: The ``.ckpt`` written by ``fit``.
        """
        if ckpt_path is None:
            raise CheckpointError("`quantize` needs a checkpoint: pass --ckpt_path <run>/checkpoints/best.ckpt.")
        callback = next((c for c in self.callbacks if isinstance(c, PostTrainingQuantization)), None)
        datamodule.trainer = self
        datamodule.prepare_data()
        return (callback or PostTrainingQuantization()).run(self, model, datamodule, ckpt_path)
