"""Small stand-ins for the corpora of the mirror, for the benchmarks' ``--quick`` runs. Not a runnable benchmark."""

from __future__ import annotations

import csv
from pathlib import Path

from datamodules.text_corpus import read_rows


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
