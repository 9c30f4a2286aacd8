"""A short fine-tuning of a copy of the trained module, after ``fit``, by a Trainer of its own: what quantization-
aware training and vocabulary pruning share.

The copy trains in ``<run>/<kind>/<name>/<digest>/`` with its own ``checkpoints/last.ckpt`` and TensorBoard
training curves. Its epochs are not validated: the final epoch's weights are what the report measures, on the
validation split among others, once. The live module is never touched, so ``test --ckpt_path``, a second ``fit``
and DDP are unaffected. A run killed during a fine-tuning resumes it, bit for bit, from that ``last.ckpt`` when
``fit --ckpt_path`` re-enters: the digest names the starting weights and every setting, so the same folder is found
again.
"""

from __future__ import annotations

import copy
import hashlib
import inspect
import json
import math
from collections.abc import Callable
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
from storage.checkpoints import use_local_checkpoint_io

Transform = Callable[[torch.Tensor], torch.Tensor]  # a batch's inputs as the fine-tuned copy reads them


@dataclass(frozen=True)
class FineTuneSettings:
    """How long and how fast a copy of the trained module is fine-tuned.

    Args:
        epochs: Fine-tuning epochs, starting from the best checkpoint.
        lr_scale: The recipe's optimizer runs at this fraction of its learning rate, cosine-annealed to 0 over
            ``epochs``.
        examples_per_epoch: At most this many training examples an epoch (a fresh shuffled sample each epoch), so a
            fine-tuning costs a bounded share of a large corpus's fit; ``None``: the whole training split.
    """

    epochs: int
    lr_scale: float
    examples_per_epoch: int | None = None

    def __post_init__(self) -> None:
        kind = self.kind()
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 1:
            raise ValueError(f"Expected `{kind}.epochs` an integer >= 1, got {self.epochs!r}.")
        if not (isinstance(self.lr_scale, (int, float)) and math.isfinite(self.lr_scale) and self.lr_scale > 0):
            raise ValueError(f"Expected `{kind}.lr_scale` > 0, got {self.lr_scale!r}.")
        examples = self.examples_per_epoch
        if examples is not None and (isinstance(examples, bool) or not isinstance(examples, int) or examples < 1):
            raise ValueError(f"Expected `{kind}.examples_per_epoch` an integer >= 1 or null, got {examples!r}.")

    @classmethod
    def kind(cls) -> str:
        """The config key errors name (``qat.<method>``, ``prune``)."""
        return "fine_tuning"


def batches_for(examples: int | None, datamodule: LightningDataModule) -> int | None:
    """The training batches that hold ``examples`` (``None``: all of them); the loader shuffles, so its first
    batches are a random sample."""
    return None if examples is None else max(1, math.ceil(examples / datamodule.hparams.batch_size))


def close_live_display(trainer: Trainer, pl_module: LightningModule) -> None:
    """End the main run's live progress display (its finished bars stay on screen) before a fine-tuning trainer
    opens its own on the same console: a rich display left open underneath would lose its place on the console's
    stack of live displays and fail when the main run tears it down. Lightning re-opens it for ``test``."""
    if trainer.progress_bar_callback is not None:
        trainer.progress_bar_callback.teardown(trainer, pl_module, "fit")


class RunsInQAT:
    """Mixin for a callback of the main run that should also run in every fine-tuning after it (QAT, pruning;
    e.g. a custom logger or a fault injector); the fine-tuning trainer's ``default_root_dir`` is its folder."""


def seed_from(folder: Path) -> None:
    """Seed torch from a :func:`digest_folder`'s digest, before the copy's net is built: the same draws (layer
    construction, dropout) for the same source and settings, whatever ran before."""
    torch.manual_seed(int(folder.name, 16))


def digest_folder(root: str | Path, kind: str, name: str, net: nn.Module, settings: list[Any]) -> Path:
    """``<root>/<kind>/<name>/<digest>``: the digest covers the starting weights and every setting (dataclasses or
    plain data), so a resumed run finds its own checkpoints and a changed best checkpoint or setting starts afresh."""
    plain = [asdict(s) if hasattr(s, "__dataclass_fields__") else s for s in settings]
    digest = hashlib.sha256(json.dumps(plain, sort_keys=True).encode())
    for key, tensor in net.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return Path(root) / kind / name / digest.hexdigest()[:12]


class _RunData(LightningDataModule):
    """The run's datamodule as a fine-tuning trainer sees it: its training split, loader and state, but no
    ``prepare_data`` (the run did that; Lightning would wait for every DDP rank around it, and the other
    ranks sit at the main run's barrier); ``transform`` turns each batch's inputs into what the copy reads."""

    def __init__(self, datamodule: LightningDataModule, transform: Transform | None = None) -> None:
        super().__init__()
        self.run_data = datamodule
        self.transform = transform

    def setup(self, stage: str) -> None:
        self.run_data.trainer = self.trainer  # loaders shard by the fine-tuning trainer's world size: one process
        self.run_data.setup(stage)

    def train_dataloader(self):
        return self.run_data.train_dataloader()

    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        if self.transform is None:
            return batch
        x, y = batch
        return self.transform(x), y

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


def fine_tune(
    trainer: Trainer,
    module: LightningModule,
    datamodule: LightningDataModule,
    folder: Path,
    settings: FineTuneSettings,
    title: str,
    transform: Transform | None = None,
) -> Path:
    """Fine-tune ``module`` (a copy: never the run's own) in ``folder`` and return its final ``last.ckpt``.

    Args:
        trainer: The main run's trainer (progress bar, batch limits and callbacks marked :class:`RunsInQAT`).
        module: The copy to train, its ``net`` already what the fine-tuning trains (built after
            :func:`seed_from`); given the recipe's optimizer at ``settings.lr_scale``, cosine-annealed over
            ``settings.epochs``.
        datamodule: The run's data (train and validation splits).
        folder: :func:`digest_folder`'s folder: checkpoints and TensorBoard logs go there, and a killed run resumes.
        settings: Epochs and learning rate.
        title: What is being fine-tuned, for the console line.
        transform: Each batch's inputs as ``module`` reads them (e.g. the kept columns of a pruned vocabulary).

    Returns:
        The final epoch's checkpoint (the learning rate annealed to 0 there; not the best on validation, so that
        the validation split stays an unbiased judge of the rows measured from it).
    """
    module._pending_rng_states = None  # a resumed main run's RNG states are not the copy's (it resumes its own)
    module.fine_tuning = FineTuning(settings.lr_scale, settings.epochs)
    module._metric_attributes = None  # Lightning's cache of id(metric) -> name: the copy's metrics are new objects
    for metric in module.modules():
        if isinstance(metric, Metric):  # one process: never wait for ranks that sit at the main run's barrier
            metric.sync_on_compute = metric._to_sync = False
    checkpoints = folder / "checkpoints"
    last = ModelCheckpoint(checkpoints, "last", enable_version_counter=False)
    limits: dict[str, int | float] = {"limit_val_batches": 0}  # the final weights are taken whatever validation says
    if trainer.limit_train_batches != 1.0:  # the main run's limit holds here too
        limits["limit_train_batches"] = trainer.limit_train_batches
    if settings.examples_per_epoch is not None and "limit_train_batches" not in limits:
        # The loader shuffles anew each epoch (its sampler is seeded by the epoch), so each epoch's sample differs.
        limits["limit_train_batches"] = batches_for(settings.examples_per_epoch, datamodule)
    close_live_display(trainer, trainer.lightning_module)
    rank_zero_info(f"{title}: {settings.epochs} epoch(s) in {folder}")
    inner = Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=settings.epochs,
        logger=TensorBoardLogger(folder.parent, name="", version=folder.name, default_hp_metric=False),
        callbacks=[last, *(c for c in trainer.callbacks if isinstance(c, RunsInQAT))],
        enable_progress_bar=trainer.progress_bar_callback is not None,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        default_root_dir=folder,
        **limits,
    )
    use_local_checkpoint_io(inner.strategy)
    resume = checkpoints / "last.ckpt"
    try:
        inner.fit(module, datamodule=_RunData(datamodule, transform), ckpt_path=resume if resume.is_file() else None)
    finally:
        datamodule.trainer = trainer
    return resume
