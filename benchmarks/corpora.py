"""The text corpora the benchmarks read from the offline data mirror, and small stand-ins for their ``--quick`` runs.
Not a runnable benchmark."""

from __future__ import annotations

import csv
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run alone too (make bench): a no-op

from datamodules.text_corpus import read_rows

MIRROR = Path(os.environ.get("QUANTLIGHT_MIRROR", Path(__file__).resolve().parents[2] / "shared" / "data"))
# name -> (corpus relative to the mirror, classes to keep; None keeps every label)
SETTINGS = {
    "tweets-2": ("sentiment-tweets/tweets.csv", ["negative", "positive"]),
    "tweets-3": ("sentiment-tweets/tweets.csv", None),
    "debian": ("debian-packages/descriptions.csv", None),
}


def sample_rows(corpus: str, classes: list[str] | None, n: int, path: Path) -> str:
    """Every k-th labelled row of ``corpus`` (of ``classes``; every label for ``None``), ``n`` in all, written to
    ``path`` as a ``text,label`` CSV; returns the path."""
    rows = read_rows(Path(corpus), "text", "label")
    kept = [
        (text, label) for text, label in zip(rows.texts, rows.labels, strict=True) if not classes or label in classes
    ]
    kept = kept[:: max(1, len(kept) // n)][:n]
    with Path(path).open("w", newline="", encoding="utf-8") as file:
        csv.writer(file).writerows([("text", "label"), *kept])
    return str(path)
