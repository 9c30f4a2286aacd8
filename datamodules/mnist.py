"""MNIST from torchvision's files, decoded once into normalized, flattened tensors.

Batches are served by indexing those tensors (no per-item PIL transforms), which makes an
epoch of logistic regression cost about what the model step costs.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from datamodules.batching import InMemoryDataModule, TensorBatchDataset
from errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_FILES = {  # split -> (images, labels, rows)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049


def check_idx_file(path: Path, magic: int, item_bytes: int) -> int:
    """Validate an uncompressed IDX file's magic number and length; return its row count.

    torchvision's reader checks with ``assert`` (gone under ``python -O``) and reads truncated
    label files silently, so the header is checked here first.
    """
    if not path.is_file():
        raise DataError(f"MNIST file {path} not found.")
    size = path.stat().st_size
    with path.open("rb") as f:
        header = f.read(8)
    found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if found != magic:
        raise DataError(
            f"{path} is not an MNIST IDX file: magic number {found}, expected {magic}. "
            "Replace it with the original uncompressed *-ubyte file."
        )
    rows = int.from_bytes(header[4:8], "big")
    expected = (16 if magic == _IMAGE_MAGIC else 8) + rows * item_bytes
    if size != expected:
        raise DataError(
            f"{path} is truncated or padded: {size} bytes, expected {expected} for {rows} rows. "
            "Delete it and download again."
        )
    return rows


def load_mnist_split(raw_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one split into ``(N, 784)`` float32 normalized pixels and ``(N,)`` int64 labels."""
    images_name, labels_name, _ = _FILES[split]
    n_images = check_idx_file(raw_dir / images_name, _IMAGE_MAGIC, 28 * 28)
    n_labels = check_idx_file(raw_dir / labels_name, _LABEL_MAGIC, 1)
    if n_images != n_labels:
        raise DataError(f"{raw_dir}: {n_images} images but {n_labels} labels in the {split} split.")
    images = read_image_file(str(raw_dir / images_name))  # (N, 28, 28) uint8
    labels = read_label_file(str(raw_dir / labels_name))  # (N,) int64
    features = images.reshape(len(images), -1).float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD)
    return features, labels  # (N, 784), (N,)


class MNISTDataModule(InMemoryDataModule):
    """MNIST as flattened, normalized 784-vectors: train/val split of the 60k, official 10k test.

    Args:
        data_dir: torchvision root; files live in ``<data_dir>/MNIST/raw/*-ubyte``.
        download: Download the files with torchvision when they are missing.
        val_size: Images of the 60k training set held out for validation (seeded split).
        batch_size: Examples per training and evaluation batch.
        num_workers: DataLoader worker processes (0 is fastest: the data is in memory).
        seed: Seed of the train/val split and of the per-epoch shuffling.
    """

    input_dim = 28 * 28
    num_classes = 10

    def __init__(
        self,
        data_dir: str | os.PathLike = "data",
        download: bool = True,
        val_size: int = 5_000,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if val_size < 1:
            raise ValueError(f"Expected `val_size` >= 1, got {val_size}.")
        if batch_size < 1:
            raise ValueError(f"Expected `batch_size` >= 1, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"Expected `num_workers` >= 0, got {num_workers}.")
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)
        self.raw_dir = self.data_dir / "MNIST" / "raw"
        self.datasets: dict[str, TensorBatchDataset] = {}

    def prepare_data(self) -> None:
        """Download the files if they are missing (runs on one process per node)."""
        missing = [
            name
            for images, labels, _ in _FILES.values()
            for name in (images, labels)
            if not (self.raw_dir / name).is_file()
        ]
        if not missing:
            return
        if not self.hparams.download:
            raise DataError(
                f"MNIST files not found in {self.raw_dir} ({', '.join(missing)}) and `download` is off. "
                "Put the four *-ubyte files there, pass --data.download true, or pass --data.data_dir."
            )
        try:
            for train in (True, False):
                MNIST(self.data_dir, train=train, download=True)
        except (OSError, RuntimeError) as err:  # torchvision raises RuntimeError after every mirror failed
            raise DataError(
                f"MNIST files not found in {self.raw_dir} and download failed ({str(err).splitlines()[0]}). "
                "Put the four *-ubyte files there or pass --data.data_dir."
            ) from err

    def setup(self, stage: str | None = None) -> None:
        if stage in ("fit", "validate", None) and "train" not in self.datasets:
            features, labels = load_mnist_split(self.raw_dir, "train")
            if self.hparams.val_size >= len(labels):
                raise DataError(
                    f"`val_size` is {self.hparams.val_size} but {self.raw_dir} holds only {len(labels)} "
                    "training images; lower --data.val_size."
                )
            order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.hparams.seed))
            val_idx, train_idx = order[: self.hparams.val_size], order[self.hparams.val_size :]
            self.datasets["train"] = TensorBatchDataset(features[train_idx], labels[train_idx])
            self.datasets["val"] = TensorBatchDataset(features[val_idx], labels[val_idx])
        if stage in ("test", "predict", None) and "test" not in self.datasets:
            self.datasets["test"] = TensorBatchDataset(*load_mnist_split(self.raw_dir, "test"))

    def dataset(self, split: str) -> TensorBatchDataset:
        return self.datasets[split]
