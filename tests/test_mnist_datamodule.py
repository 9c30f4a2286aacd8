"""MNISTDataModule: shapes, deterministic split, normalization, clear errors on bad files."""

from __future__ import annotations

import gzip
import hashlib

import numpy as np
import pytest
import torch

from datamodules.mnist import MNIST_MEAN, MNIST_STD, MNISTDataModule
from errors import DataError
from tests.helpers import write_idx


def _setup(root, **kwargs) -> MNISTDataModule:
    dm = MNISTDataModule(data_dir=root, download=False, val_size=100, batch_size=32, **kwargs)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    return dm


def test_shapes_and_split_sizes(mnist_root):
    dm = _setup(mnist_root)
    assert (len(dm.datasets["train"]), len(dm.datasets["val"]), len(dm.datasets["test"])) == (500, 100, 200)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (32, 784) and x.dtype == torch.float32
    assert y.shape == (32,) and y.dtype == torch.int64
    assert dm.input_dim == 784 and dm.num_classes == 10


def test_normalization_matches_pixels(mnist_root):
    dm = _setup(mnist_root)
    raw = np.frombuffer((mnist_root / "MNIST/raw/t10k-images-idx3-ubyte").read_bytes()[16:], dtype=np.uint8)
    expected = (torch.from_numpy(raw.reshape(200, 784).astype(np.float32)) / 255 - MNIST_MEAN) / MNIST_STD
    torch.testing.assert_close(dm.datasets["test"].features, expected)


def test_split_is_seeded_and_disjoint(mnist_root):
    def fingerprint(dm):
        return hashlib.sha1(dm.datasets["val"].features.numpy().tobytes()).hexdigest()

    a, b, c = _setup(mnist_root, seed=0), _setup(mnist_root, seed=0), _setup(mnist_root, seed=1)
    assert fingerprint(a) == fingerprint(b) != fingerprint(c)
    train = {row.numpy().tobytes() for row in a.datasets["train"].features}
    assert not any(row.numpy().tobytes() in train for row in a.datasets["val"].features)


def test_shuffle_depends_on_epoch_only(mnist_root):
    dm = _setup(mnist_root)
    loader = dm.train_dataloader()

    def first_labels(epoch):
        loader.sampler.set_epoch(epoch)
        return next(iter(loader))[1].tolist()

    assert first_labels(3) == first_labels(3) != first_labels(4)


def test_every_training_example_once_per_epoch(mnist_root):
    dm = _setup(mnist_root)
    labels = torch.cat([y for _, y in dm.train_dataloader()])
    assert sorted(labels.tolist()) == sorted(dm.datasets["train"].labels.tolist())


def test_missing_files_without_download(tmp_path):
    dm = MNISTDataModule(data_dir=tmp_path, download=False)
    with pytest.raises(DataError, match=r"MNIST files not found in .*MNIST/raw .*--data.data_dir"):
        dm.prepare_data()


def test_missing_files_download_failure_is_one_clear_error(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\nTried mirrors")

    monkeypatch.setattr("datamodules.mnist.MNIST", offline)
    with pytest.raises(DataError, match=r"download failed \(Error downloading train-images-idx3-ubyte.gz:\)"):
        MNISTDataModule(data_dir=tmp_path).prepare_data()


def test_truncated_file(mnist_root):
    path = mnist_root / "MNIST/raw/train-labels-idx1-ubyte"
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is truncated or padded: 598 bytes, expected 608"):
        _setup(mnist_root)


def test_wrong_magic(mnist_root):
    write_idx(mnist_root / "MNIST/raw/t10k-images-idx3-ubyte", np.zeros((200, 784), dtype=np.uint8))
    with pytest.raises(DataError, match=r"not an MNIST IDX file: magic number 2050, expected 2051"):
        _setup(mnist_root)


def test_val_size_larger_than_data(mnist_root):
    dm = MNISTDataModule(data_dir=mnist_root, download=False, val_size=600)
    with pytest.raises(DataError, match=r"`val_size` is 600 but .* holds only 600 training images"):
        dm.setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"val_size": 0}, "`val_size`"), ({"batch_size": 0}, "`batch_size`"), ({"num_workers": -1}, "`num_workers`")],
    ids=["val_size", "batch_size", "num_workers"],
)
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MNISTDataModule(**kwargs)


def _patch(path, offset: int, data: bytes) -> None:
    """Overwrite ``data`` at ``offset``, keeping the file's size (a corrupted byte or header field)."""
    content = bytearray(path.read_bytes())
    content[offset : offset + len(data)] = data
    path.write_bytes(bytes(content))


@pytest.mark.parametrize(
    ("split", "stage", "value"),
    [("train", "fit", 11), ("train", "fit", 10), ("t10k", "fit", 255), ("t10k", "test", 11)],
    ids=["train-11", "train-10", "test-255-before-training", "test-11-at-test"],
)
def test_label_out_of_range_is_one_error_before_training(mnist_root, split, stage, value):
    name = f"{split}-labels-idx1-ubyte"
    _patch(mnist_root / "MNIST/raw" / name, 8 + 7, bytes([value]))  # row 7: header is 8 bytes
    dm = MNISTDataModule(data_dir=mnist_root, download=False, val_size=100)
    match = rf"{name} holds label {value} at index 7 \(byte 15\), expected a digit 0\.\.9\. Replace it"
    with pytest.raises(DataError, match=match):
        dm.setup(stage)


def test_label_errors_count_every_bad_label(mnist_root):
    path = mnist_root / "MNIST/raw/train-labels-idx1-ubyte"
    for row in (3, 50, 599):
        _patch(path, 8 + row, bytes([42]))
    with pytest.raises(DataError, match=r"label 42 at index 3 .*\(3 labels out of range in all\)"):
        _setup(mnist_root)


def _dims(*dims: int) -> bytes:
    return b"".join(d.to_bytes(4, "big") for d in dims)


@pytest.mark.parametrize(
    ("name", "corrupt", "match"),
    [
        ("train-images-idx3-ubyte", lambda p: _patch(p, 12, _dims(29)),
         r"train-images-idx3-ubyte header declares 600 images of 28x29 pixels, expected 28x28"),
        ("train-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((600, 28, 29))),
         r"train-images-idx3-ubyte header declares 600 images of 28x29 pixels, expected 28x28"),
        ("t10k-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((200, 29, 27))),
         r"t10k-images-idx3-ubyte header declares 200 images of 29x27 pixels, expected 28x28 \(every MNIST image, "
         r"train and test\)"),
        ("train-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros((600, 1))),
         r"magic number 2050, expected 2049 \(uint8 labels, 1 dimension\); found uint8 with 2 dimensions"),
        ("train-labels-idx1-ubyte", lambda p: write_idx(p, np.zeros((600, 28, 28))),
         r"magic number 2051, expected 2049 \(uint8 labels, 1 dimension\); found an MNIST images file"),
        ("train-images-idx3-ubyte", lambda p: p.write_bytes(gzip.compress(p.read_bytes())),
         r"magic number \d+, expected 2051 \(uint8 images, 3 dimensions\); found a gzip archive \(gunzip it\)"),
        ("train-images-idx3-ubyte", lambda p: p.write_bytes(p.read_bytes()[:10]),
         r"train-images-idx3-ubyte is truncated: 10 bytes, shorter than its 16-byte header"),
        ("train-images-idx3-ubyte", lambda p: p.write_bytes(b"\x00\x08"),
         r"magic number None, expected 2051"),
        ("train-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((0, 28, 28))),
         r"train-images-idx3-ubyte header declares 0 rows: the file holds no data"),
        ("train-images-idx3-ubyte", lambda p: _patch(p, 4, _dims(601)),
         r"train-images-idx3-ubyte is truncated or padded: 470416 bytes, expected 471200 for 601 rows"),
        ("train-images-idx3-ubyte", lambda p: write_idx(p, np.zeros((599, 28, 28))),
         r"train-images-idx3-ubyte holds 599 images but train-labels-idx1-ubyte holds 600 labels; the train split "
         r"needs one label per image\. Replace both"),
    ],
    ids=["dims-28x29-same-size", "dims-28x29-rows-adjusted", "test-dims-differ-from-train", "labels-ndim-2",
         "labels-file-holds-images", "gzip-compressed", "header-truncated", "magic-truncated", "zero-rows",
         "row-count-field", "images-labels-row-counts"],
)  # fmt: skip
def test_every_idx_header_field_is_checked_before_training(mnist_root, name, corrupt, match):
    corrupt(mnist_root / "MNIST/raw" / name)
    dm = MNISTDataModule(data_dir=mnist_root, download=False, val_size=100)
    with pytest.raises(DataError, match=match) as err:
        dm.setup("fit")
    assert "\n" not in str(err.value)
