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


_POSITIVE = ["good", "great", "love", "happy", "smooth", "safe", "fun", "nice"]
_NEGATIVE = ["bad", "awful", "hate", "sad", "scary", "crash", "slow", "poor"]
_FILLER = ["the", "car", "drives", "road", "today", "city", "bus", "self", "auto", "ride", "my", "new"]


def text_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Learnable tiny sentiment texts, alternating labels: two words of the label plus filler."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = list(rng.choice(_POSITIVE if i % 2 else _NEGATIVE, 2, replace=False))
        words += list(rng.choice(_FILLER, 3, replace=False))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_text_corpus(path: Path, n: int = 80, seed: int = 0) -> Path:
    """A labelled CSV corpus (``text,label``) of :func:`text_rows`."""
    lines = ["text,label", *(f"{text},{label}" for text, label in text_rows(n, seed))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_imdb_tree(data_dir: Path, per_folder: int = 12) -> Path:
    """An aclImdb-like tree under ``data_dir``: train/test x neg/pos, one review per ``<id>_<rating>.txt``."""
    rows = text_rows(8 * per_folder, seed=3)
    for split in ("train", "test"):
        for folder, label in (("neg", "negative"), ("pos", "positive")):
            target = data_dir / "aclImdb" / split / folder
            target.mkdir(parents=True)
            texts = [text for text, row_label in rows if row_label == label]
            offset = 0 if split == "train" else per_folder
            for i, text in enumerate(texts[offset : offset + per_folder]):
                (target / f"{i}_{7 if folder == 'pos' else 2}.txt").write_text(f"{text}<br />{text}", encoding="utf-8")
    return data_dir


@pytest.fixture
def text_corpus(tmp_path: Path) -> Path:
    """A tiny labelled CSV corpus (80 rows, two classes) in tmp_path."""
    return write_text_corpus(tmp_path / "corpus.csv")


@pytest.fixture
def imdb_root(tmp_path: Path) -> Path:
    """A tiny aclImdb tree (12 reviews per split and label) under tmp_path/imdb."""
    return write_imdb_tree(tmp_path / "imdb")


def cli_error(capsys, *args: str) -> str:
    """Run the CLI expecting a user error (exit status 2, no traceback); return what it wrote to stderr."""
    from cli import main

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err
