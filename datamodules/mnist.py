"""MNIST from torchvision's files, decoded once into normalized, flattened tensors.

Batches are served by indexing those tensors (no per-item PIL transforms), which makes an
epoch of logistic regression cost about what the model step costs.
"""

from __future__ import annotations

import math
import os
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import MNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from datamodules.batching import InMemoryDataModule, TensorBatchDataset
from datamodules.fingerprint import files_digest, fingerprint
from errors import DataError

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
_FILES = {  # split -> (images, labels, rows)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", 60_000),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte", 10_000),
}
IMAGE_SHAPE = (28, 28)  # every MNIST-format image; `input_dim` and the model are built for it
_IMAGE_MAGIC, _LABEL_MAGIC = 2051, 2049  # IDX magic: 0x08 (uint8) << 8 | number of dimensions
_WHAT = {_IMAGE_MAGIC: "uint8 images, 3 dimensions", _LABEL_MAGIC: "uint8 labels, 1 dimension"}
_FIX = "Replace it with the original uncompressed *-ubyte file."


def read_idx_header(path: Path, magic: int) -> tuple[int, ...]:
    """The dimensions an uncompressed IDX file's header declares, after checking its magic number.

    torchvision's reader checks with ``assert`` (gone under ``python -O``) and reads truncated
    label files silently, so every header field is checked here first.
    """
    if not path.is_file():
        raise DataError(f"MNIST file {path} not found. Put the four *-ubyte files there or pass --data.data_dir.")
    header_bytes = _header_bytes(magic)
    with path.open("rb") as f:
        header = f.read(header_bytes)
    found = int.from_bytes(header[:4], "big") if len(header) >= 4 else None
    if found != magic:
        raise DataError(
            f"{path} is not an MNIST IDX file: magic number {found}, expected {magic} ({_WHAT[magic]})"
            f"{_describe_magic(found)}. {_FIX}"
        )
    if len(header) < header_bytes:
        raise DataError(
            f"{path} is truncated: {len(header)} bytes, shorter than its {header_bytes}-byte header. "
            "Delete it and download again."
        )
    return tuple(int.from_bytes(header[i : i + 4], "big") for i in range(4, header_bytes, 4))


def _header_bytes(magic: int) -> int:
    return 4 + 4 * (magic & 0xFF)  # the magic number, then one 32-bit size per dimension


def _describe_magic(found: int | None) -> str:
    """What a wrong magic number is, when it says something useful (a swapped or compressed file)."""
    if found in _WHAT:
        return f"; found an MNIST {'images' if found == _IMAGE_MAGIC else 'labels'} file"
    if found is not None and found >> 8 == 0x08:
        return f"; found uint8 with {found & 0xFF} dimensions"
    if found is not None and found >> 16 == 0x1F8B:
        return "; found a gzip archive (gunzip it)"
    return ""


def check_idx_file(path: Path, magic: int) -> int:
    """Validate an IDX file's header (magic, dimensions, row count) against its length; return its rows."""
    rows, *item_shape = read_idx_header(path, magic)
    if magic == _IMAGE_MAGIC and tuple(item_shape) != IMAGE_SHAPE:
        raise DataError(
            f"{path} header declares {rows} images of {'x'.join(map(str, item_shape))} pixels, expected "
            f"{IMAGE_SHAPE[0]}x{IMAGE_SHAPE[1]} (every MNIST image, train and test). {_FIX}"
        )
    if rows == 0:
        raise DataError(f"{path} header declares 0 rows: the file holds no data. {_FIX}")
    size, expected = path.stat().st_size, _header_bytes(magic) + rows * math.prod(item_shape)
    if size != expected:
        raise DataError(
            f"{path} is truncated or padded: {size} bytes, expected {expected} for {rows} rows. "
            "Delete it and download again."
        )
    return rows


def check_labels(path: Path, labels: torch.Tensor, num_classes: int = 10) -> None:
    """Refuse labels outside ``0..num_classes-1`` (cross-entropy would fail mid-training on them)."""
    bad = ((labels < 0) | (labels >= num_classes)).nonzero().flatten()
    if len(bad):
        index = int(bad[0])
        more = f" ({len(bad)} labels out of range in all)" if len(bad) > 1 else ""
        raise DataError(
            f"{path} holds label {int(labels[index])} at index {index} (byte {8 + index}), expected a digit "
            f"0..{num_classes - 1}{more}. {_FIX}"
        )


def read_split_labels(raw_dir: Path, split: str) -> torch.Tensor:
    """Check both files of a split (headers, sizes, one label per image) and return its ``(N,)`` labels."""
    images_name, labels_name, _ = _FILES[split]
    n_images = check_idx_file(raw_dir / images_name, _IMAGE_MAGIC)
    n_labels = check_idx_file(raw_dir / labels_name, _LABEL_MAGIC)
    if n_images != n_labels:
        raise DataError(
            f"{raw_dir / images_name} holds {n_images} images but {labels_name} holds {n_labels} labels; the "
            f"{split} split needs one label per image. Replace both with the files of one MNIST release."
        )
    labels = read_label_file(str(raw_dir / labels_name))  # (N,) int64
    check_labels(raw_dir / labels_name, labels)
    return labels


def load_mnist_split(raw_dir: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Decode one split into ``(N, 784)`` float32 normalized pixels and ``(N,)`` int64 labels."""
    labels = read_split_labels(raw_dir, split)
    images = read_image_file(str(raw_dir / _FILES[split][0]))  # (N, 28, 28) uint8
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

    input_kind = "image"  # what a deployable bundle of its model reads (``preprocessing()["input"]``)
    input_dim = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
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
        if seed < 0:
            raise ValueError(f"Expected `seed` >= 0, got {seed}.")
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
            self._setup_train_val()
            if stage == "fit":  # the test split is read after training: a bad file stops the run now
                read_split_labels(self.raw_dir, "test")
        if stage in ("test", "predict", None) and "test" not in self.datasets:
            self.datasets["test"] = TensorBatchDataset(*load_mnist_split(self.raw_dir, "test"))

    def _setup_train_val(self) -> None:
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

    def dataset(self, split: str) -> TensorBatchDataset:
        return self.datasets[split]

    def state_dict(self) -> dict:
        return {"data": self.data_fingerprint}  # what a resumed fit must be given

    @cached_property
    def data_fingerprint(self) -> dict:
        """The four files and the train/val split (:mod:`datamodules.fingerprint`); checkpoints keep it for a
        resumed fit."""
        h, names = self.hparams, [name for images, labels, _ in _FILES.values() for name in (images, labels)]
        digest = files_digest([self.raw_dir / name for name in names], {"val_size": h.val_size, "seed": h.seed})
        train = check_idx_file(self.raw_dir / _FILES["train"][1], _LABEL_MAGIC) - h.val_size
        test = check_idx_file(self.raw_dir / _FILES["test"][1], _LABEL_MAGIC)
        return fingerprint(str(self.raw_dir), h.seed, {"train": train, "val": h.val_size, "test": test}, digest)

    @property
    def classes(self) -> list[str]:
        """Label names in class-index order: the digits ``"0"`` to ``"9"``."""
        return [str(digit) for digit in range(self.num_classes)]

    def preprocessing(self) -> dict:
        """How raw uint8 images become the model's input, as plain data (JSON-ready), for a deployable bundle:
        ``(pixels / scale - mean) / std`` in float32, flattened row by row, as :func:`load_mnist_split` does.

        >>> MNISTDataModule().preprocessing()["image_shape"]
        [28, 28]
        """
        return {
            "input": "image",
            "image_shape": list(IMAGE_SHAPE),
            "scale": 255.0,
            "mean": MNIST_MEAN,
            "std": MNIST_STD,
        }

    def raw_test_inputs(self) -> np.ndarray:
        """The official test images as stored, ``(N, 28, 28)`` uint8: what a deployed model is given."""
        return read_image_file(str(self.raw_dir / _FILES["test"][0])).numpy()

    def featurize_raw(self, images: np.ndarray) -> torch.Tensor:
        """``(B, 28, 28)`` uint8 -> the ``(B, 784)`` inputs training used, by :func:`load_mnist_split`'s arithmetic."""
        return torch.from_numpy(images).reshape(len(images), -1).float().div_(255).sub_(MNIST_MEAN).div_(MNIST_STD)
