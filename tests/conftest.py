"""Shared fixtures: tiny, real-format data written to tmp_path, and the offline mirror."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file (the MNIST on-disk format)."""
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k lights a 4x4 block at row k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 8, 10:14] = 255
    return images, labels


@pytest.fixture
def mnist_root(tmp_path: Path) -> Path:
    """A torchvision-style MNIST root with 600 train and 200 test synthetic images."""
    raw = tmp_path / "mnist" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n, seed in (("train", 600, 0), ("t10k", 200, 1)):
        images, labels = make_digits(n, seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    return tmp_path / "mnist"


@pytest.fixture
def mirror() -> Path:
    """The offline data mirror; CI must have it, elsewhere its tests are skipped with a reason."""
    path = Path(os.environ.get("QUANTLIGHT_MIRROR", REPO.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the offline data mirror, not found at {path} (set QUANTLIGHT_MIRROR).")
        pytest.skip(f"offline data mirror not found at {path}")
    return path
