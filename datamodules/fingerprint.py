"""What a run was trained on, as plain data kept in its checkpoints (the datamodule's state): the corpus as named,
its split, and a SHA-256 of what the split served. A resumed fit compares it with the data it is given
(``storage.checkpoints.check_same_data``) and refuses other data before anything is written.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from datamodules.text_corpus import Rows


def fingerprint(corpus: str, seed: int, rows: Mapping[str, int], digest: str) -> dict[str, Any]:
    """The fingerprint's fields: ``corpus`` and ``rows`` name the data in a refusal, ``sha256`` is compared.

    >>> fingerprint("c.csv", 0, {"train": 7, "val": 1, "test": 2}, "ab")
    {'corpus': 'c.csv', 'seed': 0, 'rows': 'train 7, val 1, test 2', 'sha256': 'ab'}
    """
    counts = ", ".join(f"{split} {count:,}" for split, count in rows.items())
    return {"corpus": corpus, "seed": seed, "rows": counts, "sha256": digest}


def rows_digest(splits: Mapping[str, Rows]) -> str:
    """SHA-256 of the labels and texts of each split, in order: another corpus, another split (seed, sizes,
    classes) or an edited row gives another digest; the same rows read from a moved file give the same."""
    digest = hashlib.sha256()
    for name in ("train", "val", "test"):
        rows = splits[name]
        digest.update(f"{name}\0{len(rows)}\0".encode())
        digest.update("\0".join(str(label) for label in rows.labels).encode("utf-8", "surrogateescape"))
        digest.update("\0".join(rows.texts).encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


def files_digest(paths: Iterable[Path], settings: Mapping[str, Any]) -> str:
    """SHA-256 of files' bytes (read in 1 MiB blocks) and the split's settings."""
    digest = hashlib.sha256(repr(sorted(settings.items())).encode())
    for path in paths:
        with path.open("rb") as f:
            while block := f.read(2**20):
                digest.update(block)
    return digest.hexdigest()


def text_fingerprint(hparams: Mapping[str, Any], splits: Mapping[str, Rows]) -> dict[str, Any]:
    """A text datamodule's fingerprint: its files as given (or aclImdb's folder), its split, its rows' digest."""
    paths = [str(hparams[key]) for key in ("path", "train_path", "val_path", "test_path") if hparams.get(key)]
    corpus = f"aclImdb under {hparams['data_dir']}" if hparams["source"] == "imdb" else ", ".join(paths)
    counts = {split: len(splits[split]) for split in ("train", "val", "test")}
    return fingerprint(corpus, hparams["seed"], counts, rows_digest(splits))
