"""MNIST on the real files of the offline mirror: the official split sizes, and a short fit that learns."""

from __future__ import annotations

import hashlib

import pytest
import torch

from datamodules.mnist import MNISTDataModule

# The well-known MD5 sums of the uncompressed MNIST files.
MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}


@pytest.mark.real_data
@pytest.mark.slow
def test_real_mnist_splits_and_one_epoch(mirror):
    raw = mirror / "MNIST" / "raw"
    for name, md5 in MD5.items():
        assert hashlib.md5((raw / name).read_bytes()).hexdigest() == md5, name

    dm = MNISTDataModule(data_dir=mirror, download=False, batch_size=1024)
    dm.prepare_data()
    dm.setup("fit")
    dm.setup("test")
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [55_000, 5_000, 10_000]
    # Normalized with MNIST's own statistics: the training pixels come out near zero mean, unit std.
    features = dm.dataset("train").features
    assert abs(features.mean().item()) < 0.01 and abs(features.std().item() - 1) < 0.01

    torch.manual_seed(0)
    model = torch.nn.Linear(784, 10)
    optimizer = torch.optim.AdamW(model.parameters(), lr=4e-3)
    for x, y in dm.train_dataloader():  # one epoch through the same loader fit uses
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    test = dm.dataset("test")
    with torch.inference_mode():
        accuracy = (model(test.features).argmax(1) == test.labels).float().mean().item()
    assert accuracy > 0.90  # one epoch of logistic regression; 15 epochs of the config reach 92.6 %
