"""The one place that knows which checkpoint is "the best" of a run."""

from __future__ import annotations

import time
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


class BestSaved:
    """When a fit saved its best checkpoint: the epoch and the seconds from ``start`` (the fit's) to the end of that
    checkpoint's write. Made when training starts (a resumed fit's earlier best is not this fit's); :meth:`note` it
    when an epoch's checkpoints are written: the next epoch's start, or training's end."""

    def __init__(self, trainer: Trainer, start: float) -> None:
        self.start = start
        self.seen = _best_of(trainer)
        self.reached: dict[str, float] | None = None

    def note(self, trainer: Trainer) -> None:
        best = _best_of(trainer)
        if best is not None and best != self.seen:
            self.seen = best
            self.reached = {"epoch": trainer.current_epoch, "seconds": time.perf_counter() - self.start}  # epochs done

    def figures(self) -> dict[str, float] | None:
        """``{"epoch": 1-based, "seconds"}``, or ``None`` when this fit saved no best checkpoint."""
        if self.reached is None:
            return None
        return {"epoch": self.reached["epoch"], "seconds": round(self.reached["seconds"], 3)}


def _best_of(trainer: Trainer) -> tuple[str, float | None] | None:
    """The best checkpoint's path and score so far, or ``None``."""
    callback = trainer.checkpoint_callback
    if callback is None or not callback.best_model_path:
        return None
    score = callback.best_model_score
    return callback.best_model_path, None if score is None else float(score)


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
