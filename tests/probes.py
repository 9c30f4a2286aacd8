"""Callbacks that record what a run did, for tests that run the CLI in a subprocess."""

from __future__ import annotations

from pathlib import Path

import torch
from lightning.pytorch import Callback


class SaveRankWeights(Callback):
    """Write each process's model weights at the start and the end of training to ``<folder>/rank<N>.pt``.

    Args:
        folder: Where the files go.
    """

    def __init__(self, folder: str) -> None:
        self.folder = Path(folder)
        self.start: dict[str, torch.Tensor] = {}

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_end(self, trainer, pl_module) -> None:
        end = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}
        torch.save({"start": self.start, "end": end}, self.folder / f"rank{trainer.global_rank}.pt")
