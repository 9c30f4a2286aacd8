"""Shared LightningModule for every Quantlight classifier.

Subclasses build a plain ``nn.Module`` in ``self.net`` (the quantizers work on that) and
inherit the loss, torchmetrics accuracy, namespaced logging and optimizer wiring.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn import functional as F
from torchmetrics.aggregation import MeanMetric
from torchmetrics.classification import MulticlassAccuracy

from errors import NonFiniteLossError
from storage.checkpoints import check_state_fits


class ClassifierModule(LightningModule):
    """Cross-entropy classifier around ``self.net`` (a plain ``nn.Module``: logits out).

    Args:
        num_classes: Number of output classes.
        optimizer: Optimizer factory, ``params -> Optimizer`` (a ``class_path`` in YAML).
        lr_scheduler: Optional scheduler factory, ``optimizer -> LRScheduler``; stepped per epoch.
    """

    net: nn.Module

    def __init__(
        self,
        num_classes: int,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"Expected `num_classes` >= 2, got {num_classes}.")
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.train_loss = MeanMetric()
        self.train_acc = MulticlassAccuracy(num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes, average="micro")
        self._pending_rng_states: dict | None = None  # set by on_load_checkpoint, applied at the next epoch
        self.fine_tuning: FineTuning | None = None  # set on a copy that fine-tunes trained weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, input_dim) -> (B, num_classes)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        if not math.isfinite(loss.item()):
            raise NonFiniteLossError(
                f"Training loss became {loss.item()} at epoch {self.current_epoch}, step {self.global_step}. "
                "Lower the learning rate or check the inputs; the best checkpoint so far is kept."
            )
        # Metrics accumulate per step and are logged once per epoch: a `self.log` call costs
        # more than the whole step of a small model.
        self.train_loss.update(loss.detach(), weight=len(y))
        self.train_acc.update(logits.detach(), y)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("train/loss", self.train_loss)
        self.log("train/acc", self.train_acc)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test", self.test_acc)

    def predict_step(self, batch, batch_idx: int) -> torch.Tensor:
        """Class probabilities, (B, num_classes); a batch may be ``(x, y)`` or ``x``."""
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self(x).softmax(dim=-1)

    def _eval_step(self, batch: tuple[torch.Tensor, torch.Tensor], stage: str, acc: MulticlassAccuracy) -> None:
        x, y = batch
        logits = self(x)
        acc.update(logits, y)
        self.log(f"{stage}/loss", F.cross_entropy(logits, y), on_epoch=True, sync_dist=True)
        self.log(f"{stage}/acc", acc, on_epoch=True)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["rng_states"] = collect_rng_states()
        # Under the CLI the optimizer hparams are plain config dicts; built in Python they are
        # callables, which `torch.load(weights_only=True)` would refuse: keep only plain data.
        hparams = checkpoint.get("hyper_parameters", {})
        for key in ("optimizer", "lr_scheduler"):
            if callable(hparams.get(key)):
                del hparams[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning loads the weights next: a width mismatch would be a size-mismatch traceback.
        check_state_fits("The checkpoint", checkpoint.get("state_dict", {}), self)
        # Applied when the resumed epoch starts, after the sanity check has drawn from the RNG:
        # the resumed run then draws exactly what the uninterrupted run drew.
        self._pending_rng_states = checkpoint.get("rng_states")

    def on_train_epoch_start(self) -> None:
        if self._pending_rng_states is not None:
            restore_rng_states(self._pending_rng_states)
            self._pending_rng_states = None

    def parameter_groups(self) -> list:
        """What the optimizer factory is given: the parameters, or parameter groups with their own settings."""
        return list(self.parameters())

    def configure_optimizers(self):
        optimizer = self.optimizer_factory(self.parameter_groups())
        keep_group_names(optimizer)
        if self.fine_tuning is not None:
            return self.fine_tuning.configure(optimizer)
        if self.lr_scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.lr_scheduler_factory(optimizer)}}


def keep_group_names(optimizer: torch.optim.Optimizer) -> None:
    """Keep the parameter groups' names (TensorBoard's ``lr-SGD/term_rows``) through ``load_state_dict``: an
    optimizer state saved before the groups had names (an older checkpoint) loads its settings, and the groups
    keep the names the model gives them.

    Example:
        >>> weight, bias = nn.Linear(2, 2).parameters()
        >>> named = torch.optim.SGD([{"params": [weight], "name": "weight"}, {"params": [bias], "name": "bias"}])
        >>> keep_group_names(named)
        >>> unnamed = torch.optim.SGD([{"params": [weight], "lr": 0.1}, {"params": [bias], "lr": 0.5}])
        >>> named.load_state_dict(unnamed.state_dict())
        >>> [(group["name"], group["lr"]) for group in named.param_groups]
        [('weight', 0.1), ('bias', 0.5)]
    """
    names = [group.get("name") for group in optimizer.param_groups]

    def name_groups(optimizer: torch.optim.Optimizer) -> None:
        for group, name in zip(optimizer.param_groups, names, strict=True):
            if name is not None:
                group["name"] = name

    optimizer.register_load_state_dict_post_hook(name_groups)


@dataclass(frozen=True)
class FineTuning:
    """Fine-tuning trained weights: the recipe's optimizer at ``lr_scale`` times its learning rate,
    annealed to 0 by a cosine over ``epochs`` (the recipe's own schedule spans the first training).

    Args:
        lr_scale: Multiplies every parameter group's learning rate.
        epochs: The cosine's length, in epochs.
    """

    lr_scale: float
    epochs: int

    def configure(self, optimizer: torch.optim.Optimizer) -> dict:
        for group in optimizer.param_groups:
            group["lr"] *= self.lr_scale
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler}}


def collect_rng_states() -> dict:
    """Torch, NumPy and Python RNG states as plain tensors and ints (``weights_only``-loadable)."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": pos,
            "has_gauss": has_gauss,
            "cached": cached,
        },
        "python": {"version": version, "state": torch.tensor(py_state, dtype=torch.int64), "gauss": gauss},
    }


def restore_rng_states(states: dict) -> None:
    """Inverse of :func:`collect_rng_states`."""
    torch.set_rng_state(states["torch"])
    np_state = states["numpy"]
    keys = np_state["keys"].numpy().astype(np.uint32)
    np.random.set_state(("MT19937", keys, np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    py = states["python"]
    random.setstate((py["version"], tuple(py["state"].tolist()), py["gauss"]))
