"""The one place that knows which checkpoint is "the best" of a run."""

from __future__ import annotations

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_warn


def best_checkpoint(trainer: Trainer, warn: bool = True) -> str | None:
    """``ModelCheckpoint.best_model_path`` of the trainer's first checkpoint callback, or ``None``.

    With ``warn``, a missing best checkpoint is said out loud (quantization then uses the final weights).
    """
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_path:
        return callback.best_model_path
    if warn:
        reason = "fast_dev_run saves none" if trainer.fast_dev_run else "no ModelCheckpoint saved one"
        rank_zero_warn(f"No best checkpoint ({reason}): quantizing the final weights of this fit instead.")
    return None
