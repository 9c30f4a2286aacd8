"""The one place that knows which checkpoint is "the best" of a run."""

from __future__ import annotations

from collections.abc import Sequence

from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_warn
from lightning.pytorch.utilities.model_helpers import is_overridden

from errors import ConfigError


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


def check_unique_state_keys(callbacks: Sequence[Callback]) -> None:
    """Refuse two stateful callbacks that would save their state under one key (Lightning's rule), naming them.

    Lightning keys a ``ModelCheckpoint``'s state by its monitor, mode and frequency, not its file name: a user's
    checkpoint that monitors what base.yaml's ``best.ckpt`` monitors would overwrite that one's state on resume.

    Raises:
        ConfigError: One line naming both callbacks and the settings that tell them apart.
    """
    seen: dict[str, Callback] = {}
    for callback in callbacks:
        if not is_overridden("state_dict", instance=callback, parent=Callback):
            continue
        other = seen.setdefault(callback.state_key, callback)
        if other is callback:
            continue
        if isinstance(callback, ModelCheckpoint):
            raise ConfigError(
                f"Two ModelCheckpoint callbacks (filename {other.filename!r} and {callback.filename!r}) would save "
                f"their state under one key, {callback.state_key}, and one would take the other's on resume. "
                "configs/base.yaml already keeps best.ckpt (monitor val/acc, mode max) and last.ckpt (no monitor): "
                "give yours another monitor, mode or every_n_epochs."
            )
        raise ConfigError(
            f"Two {type(callback).__name__} callbacks save their state under one key ({callback.state_key}). "
            "Keep one, or give them settings that differ."
        )
