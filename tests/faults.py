"""Callbacks that break a run on purpose: a SIGKILL (as a crash or OOM would), NaN weights (as divergence would)."""

from __future__ import annotations

import os
import signal

from lightning.pytorch import Callback

from callbacks.quantization_aware_training import RunsInQAT


class KillAtEpoch(Callback):
    """SIGKILL the training process when epoch ``epoch`` starts (the previous epoch's checkpoints are on disk).

    Args:
        epoch: Zero-based epoch at whose start the process dies.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), signal.SIGKILL)


class PoisonAtEpoch(Callback):
    """Fill the model's weights with NaN when epoch ``epoch`` starts, as a diverging run would.

    Args:
        epoch: Zero-based epoch at whose start the weights become NaN.
    """

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch:
            for param in pl_module.parameters():
                param.data.fill_(float("nan"))


class KillAtQATEpoch(KillAtEpoch, RunsInQAT):
    """SIGKILL the process when quantization-aware fine-tuning epoch ``epoch`` starts (not the main run's).

    Args:
        epoch: Zero-based QAT epoch at whose start the process dies.
    """

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if pl_module.fine_tuning is not None:
            super().on_train_epoch_start(trainer, pl_module)
