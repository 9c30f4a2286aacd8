"""Labelled rows into train/val/test parts: class filtering, unknown labels, stratified seeded splits; the rows to
predict.

Pure functions over :class:`~datamodules.text_corpus.Rows`, so splitting is tested without a Trainer.
"""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.utilities import rank_zero_info
from sklearn.model_selection import train_test_split

from datamodules.text_corpus import BadRow, OnBadRow, Rows, file_format, handle_bad_rows, read_rows
from errors import DataError


def keep_classes(rows: Rows, classes: list[str], drop_others: bool, on_bad_row: OnBadRow) -> Rows:
    """Rows whose label is in ``classes``; others are left out and counted (``drop_others``) or bad rows."""
    known = set(classes)
    keep = [i for i, label in enumerate(rows.labels) if label in known]
    if len(keep) == len(rows):
        return rows
    if drop_others:
        others = sorted({label for label in rows.labels if label not in known})
        rank_zero_info(
            f"{rows.path}: kept {len(keep)} rows of classes ({', '.join(classes)}); left out "
            f"{len(rows) - len(keep)} with other labels ({', '.join(others)})."
        )
    else:
        handle_bad_rows(unknown_labels(rows, classes), on_bad_row)
    return rows.subset(keep)


def unknown_labels(rows: Rows, classes: list[str]) -> list[BadRow]:
    """A bad row for every row labelled with something outside ``classes`` (unlabelled rows pass)."""
    known = set(classes)
    return [
        BadRow(rows.path, line, f"unknown label {label!r} (classes: {', '.join(classes)})")
        for label, line in zip(rows.labels, rows.lines, strict=True)
        if label and label not in known
    ]


def stratified_split(rows: Rows, size: int | float, seed: int) -> tuple[Rows, Rows]:
    """``(rest, part)``: a seeded split that keeps each label's share in both parts.

    Example:
        >>> rows = Rows("c.csv", [f"t{i}" for i in range(10)], ["a", "b"] * 5, list(range(2, 12)))
        >>> rest, part = stratified_split(rows, 0.4, seed=0)
        >>> len(rest), sorted(part.labels)
        (6, ['a', 'a', 'b', 'b'])
    """
    try:
        rest, part = train_test_split(list(range(len(rows))), test_size=size, random_state=seed, stratify=rows.labels)
    except ValueError as err:  # too few rows of a class, or a part smaller than the class count
        raise DataError(
            f"Cannot split {len(rows)} rows of {rows.path} into stratified parts of size {size} ({err}). "
            "Use more data, change --data.init_args.val_size/test_size, or give val_path/test_path."
        ) from err
    return rows.subset(rest), rows.subset(part)


def split_corpus(
    train: Rows,
    val: Rows | None,
    test: Rows | None,
    classes: list[str] | None,
    drop_others: bool,
    val_size: int | float,
    test_size: int | float,
    seed: int,
    on_bad_row: OnBadRow,
) -> tuple[dict[str, Rows], list[str]]:
    """``({"train", "val", "test"}: rows, classes)``; missing parts are split off ``train``.

    Args:
        train: Labelled training rows (the whole corpus when ``val``/``test`` are ``None``).
        val: Validation rows from their own file, or ``None``.
        test: Test rows from their own file, or ``None``.
        classes: Class names in index order; ``None`` takes the training labels, sorted.
        drop_others: Leave out rows of other labels (``classes`` chosen in the config); otherwise
            such rows are bad rows.
        val_size: Fraction of the whole corpus (so 0.1 with test 0.2 gives 70/10/20), or a row count.
        test_size: Fraction of the whole corpus, or a row count (when there is no test file).
        seed: Seed of the stratified splits.
        on_bad_row: What bad rows do: ``error`` or ``skip``.
    """
    for rows in (train, val, test):
        if rows is not None:
            handle_bad_rows(rows.bad, on_bad_row)
    if classes is None:
        classes = sorted(set(train.labels))
        if len(classes) < 2:
            raise DataError(f"{train.path} has {len(classes)} label(s); a classifier needs at least two.")
    train, val, test = (
        keep_classes(rows, classes, drop_others, on_bad_row) if rows is not None else None
        for rows in (train, val, test)
    )
    share = 0.0
    if test is None:
        share = test_size if isinstance(test_size, float) else 0.0
        train, test = stratified_split(train, test_size, seed)
    if val is None:
        train, val = stratified_split(train, val_size / (1 - share) if isinstance(val_size, float) else val_size, seed)
    return {"train": train, "val": val, "test": test}, classes


def read_predict_rows(
    path: Path, text_column: str, label_column: str, classes: list[str], on_bad_row: OnBadRow, max_field_chars: int
) -> Rows:
    """The texts to predict in ``path`` (one per line, or the corpus format, whose labels are optional), without
    its bad rows and rows of a label outside ``classes``; ``.bad`` lists both, handled as ``on_bad_row`` says."""
    labelled = file_format(path, allow_lines=True) != "lines"
    rows = read_rows(
        path, text_column, label_column if labelled else None, True, label_required=False,
        max_field_chars=max_field_chars,
    )  # fmt: skip
    unknown = unknown_labels(rows, classes)
    bad = sorted(rows.bad + unknown, key=lambda row: row.line)
    handle_bad_rows(bad, on_bad_row)
    bad_lines = {row.line for row in unknown}
    kept = rows.subset([i for i, line in enumerate(rows.lines) if line not in bad_lines])
    if not len(kept) and not bad:
        raise DataError(
            f"No text to predict in {path}: the file is empty. Pass a file that holds the texts "
            "(one per line, or CSV/TSV/JSON Lines rows)."
        )
    if not len(kept):
        raise DataError(f"No text to predict in {path}: all {len(bad)} rows are bad (first: {bad[0]}).")
    kept.bad = bad
    return kept
