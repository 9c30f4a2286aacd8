"""Batch-at-a-time data loading for data that already sits in memory as tensors.

Per-item ``__getitem__`` plus collation costs more than the model step for small models;
here the DataLoader hands the whole index list of a batch to ``__getitems__`` and gets the
batch back from one indexing operation.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, Dataset, DistributedSampler


class TensorBatchDataset(Dataset):
    """Features and labels as tensors, served a whole batch per call.

    Example:
        >>> ds = TensorBatchDataset(torch.arange(6.0).view(3, 2), torch.tensor([0, 1, 0]))
        >>> x, y = ds.__getitems__([2, 0])
        >>> x.tolist(), y.tolist()
        ([[4.0, 5.0], [0.0, 1.0]], [0, 0])
    """

    def __init__(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        if len(features) != len(labels):
            raise ValueError(f"Expected as many labels as rows, got {len(labels)} labels for {len(features)} rows.")
        self.features = features
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.features[index], self.labels[index]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.as_tensor(indices, dtype=torch.long)
        return self.features[idx], self.labels[idx]  # (B, D), (B,)


def _keep_batch(batch):
    """Collate for ``__getitems__`` datasets: the batch is already assembled."""
    return batch


def batch_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    num_workers: int = 0,
) -> DataLoader:
    """A DataLoader that fetches whole batches through ``dataset.__getitems__``.

    Shuffling uses a ``DistributedSampler`` even on one process: its order depends only on
    ``(seed, epoch)``, and Lightning sets the epoch, so a resumed run sees the same order as
    an uninterrupted one, and the same loader works under DDP.
    """
    sampler = (
        DistributedSampler(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed) if shuffle else None
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=_keep_batch,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        # Each new iterator draws a worker seed; from its own generator, not the global RNG, so that
        # creating loaders (which a resumed run does at other moments) never shifts dropout's draws.
        generator=torch.Generator().manual_seed(seed),
    )


class InMemoryDataModule(LightningDataModule, ABC):
    """Loaders for a datamodule whose splits are in-memory datasets served a batch at a time.

    Subclasses implement :meth:`dataset` and keep ``batch_size``, ``num_workers`` and ``seed`` in
    ``self.hparams``; ``predict_split`` names the split that ``predict`` reads.
    """

    predict_split = "test"

    @abstractmethod
    def dataset(self, split: str) -> Dataset:
        """The dataset of ``split`` (``train``, ``val``, ``test`` or ``predict_split``)."""

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        return batch_loader(
            self.dataset("train"),
            self.hparams.batch_size,
            shuffle=True,
            seed=self.hparams.seed,
            num_replicas=trainer.world_size if trainer else 1,
            rank=trainer.global_rank if trainer else 0,
            num_workers=self.hparams.num_workers,
        )

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader("test")

    def predict_dataloader(self) -> DataLoader:
        return self._eval_loader(self.predict_split)

    def _eval_loader(self, split: str) -> DataLoader:
        return batch_loader(
            self.dataset(split), self.hparams.batch_size, seed=self.hparams.seed, num_workers=self.hparams.num_workers
        )
