"""Read labelled or unlabelled texts from CSV, TSV, JSON Lines, plain-text lines or the aclImdb tree.

Every row keeps the line it came from, so a bad row (empty text, missing or unknown label,
bytes that are not UTF-8, a malformed record) is reported as ``file:line: reason`` and the
caller decides whether that stops the run or is skipped and counted.

A CSV/TSV text may be ``MAX_FIELD_CHARS`` (64 Mi) characters long, not the ``csv`` module's 131,072.
"""

from __future__ import annotations

import csv
import json
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from errors import DataError

OnBadRow = Literal["error", "skip"]
FORMATS = {".csv": "csv", ".tsv": "tsv", ".tab": "tsv", ".jsonl": "jsonl", ".ndjson": "jsonl"}
# Longest CSV/TSV field (one text) read, in characters; `read_rows(max_field_chars=...)` overrides it.
# A whole book is a few million characters (War and Peace: 3.2 M), so real documents fit with room
# to spare; a field past 64 Mi is far more likely a quote never closed (it swallows the rest of the
# file) than a text, and already takes 64-256 MB as a Python string before vectorizing.
MAX_FIELD_CHARS = 64 * 2**20
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"  # UTF-8 byte-order mark some editors write first


@dataclass(frozen=True)
class BadRow:
    """A row that cannot be used, and why; ``str()`` is ``path:line: reason``."""

    path: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}"


@dataclass
class Rows:
    """Texts of one file (or split), their labels (``None`` when unlabelled) and 1-based source lines."""

    path: str
    texts: list[str] = field(default_factory=list)
    labels: list[str | None] = field(default_factory=list)
    lines: list[int] = field(default_factory=list)
    bad: list[BadRow] = field(default_factory=list)

    def add(self, text: str, label: str | None, line: int) -> None:
        self.texts.append(text)
        self.labels.append(label)
        self.lines.append(line)

    def add_checked(self, text: str | None, label: str | None, line: int, labelled: bool) -> None:
        """Add the row, or record it as bad with the reason it is unusable."""
        reason = _clean_text(text, label, labelled)
        if reason:
            self.bad.append(BadRow(self.path, line, reason))
        else:
            self.add(text, label, line)

    def subset(self, keep: list[int]) -> Rows:
        """The rows at positions ``keep``, in that order (bad rows stay with the file they came from)."""
        return Rows(
            self.path, [self.texts[i] for i in keep], [self.labels[i] for i in keep], [self.lines[i] for i in keep]
        )

    def __len__(self) -> int:
        return len(self.texts)


def file_format(path: Path, allow_lines: bool) -> str:
    """``csv``, ``tsv`` or ``jsonl`` from the suffix; any other suffix is ``lines`` where allowed."""
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None and not allow_lines:
        raise DataError(
            f"Cannot tell the format of {path} from its suffix {path.suffix!r}. "
            f"Name it with one of {', '.join(FORMATS)} (CSV, TSV or JSON Lines)."
        )
    return fmt or "lines"


def read_rows(
    path: Path,
    text_column: str,
    label_column: str | None,
    allow_lines: bool = False,
    label_required: bool = True,
    max_field_chars: int = MAX_FIELD_CHARS,
) -> Rows:
    """Read a corpus file; rows that cannot be used go to ``Rows.bad`` with their line.

    Args:
        path: CSV, TSV or JSON Lines file; with ``allow_lines``, any other file is one text per line.
        text_column: Column (or JSON key) holding the text.
        label_column: Column holding the label; ``None`` reads texts only.
        allow_lines: Accept one-text-per-line files (for prediction inputs).
        label_required: Every row must have a label; otherwise a missing label column or value reads as ``None``.
        max_field_chars: Longest CSV/TSV field, in characters; a longer one is a ``DataError`` naming its line.
    """
    if max_field_chars < 1:
        raise ValueError(f"Expected `max_field_chars` >= 1, got {max_field_chars}.")
    check_readable_file(path)
    fmt = file_format(path, allow_lines)
    if fmt == "lines":
        return _read_lines(path)
    if fmt == "jsonl":
        return _read_jsonl(path, text_column, label_column, label_required)
    delimiter = "," if fmt == "csv" else "\t"
    return _read_delimited(path, delimiter, text_column, label_column, label_required, max_field_chars)


def check_readable_file(path: Path) -> None:
    """Refuse, in one line, a corpus path that is missing, a folder, or a gzip file (read as text it is noise)."""
    if path.is_dir():
        raise DataError(
            f"Text file {path} is a folder, not a file. Pass the corpus file inside it (CSV, TSV or JSON Lines)."
        )
    if not path.is_file():
        raise DataError(f"Text file {path} not found. Check the path, or pass another one in the data config.")
    with path.open("rb") as f:
        if f.read(2) == _GZIP_MAGIC:
            raise DataError(f"{path} is gzip-compressed. Decompress it first (gunzip -k {path}) and pass the result.")


def _clean_text(text: str | None, label: str | None, labelled: bool) -> str | None:
    """The reason a row is unusable, or ``None`` when it is fine."""
    if text is None:
        return "missing text field"
    if _undecodable(text) or (label is not None and _undecodable(label)):
        return "undecodable bytes (the file is not valid UTF-8 here)"
    if not text.strip():
        return "empty text"
    if labelled and (label is None or not label.strip()):
        return "missing label"
    return None


def _undecodable(value: str) -> bool:
    # Files are read with errors="surrogateescape": bytes that are not UTF-8 become lone surrogates.
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _read_delimited(
    path: Path, delimiter: str, text_column: str, label_column: str | None, label_required: bool, max_field_chars: int
) -> Rows:
    rows = Rows(str(path))
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f, _csv_field_limit(max_field_chars):
        reader = csv.reader(f, delimiter=delimiter)
        header = _next_record(reader, path, 1, max_field_chars)
        if header is None:
            raise DataError(f"{path} is empty: expected a header row naming the columns.")
        header = [name.strip() for name in header]
        if label_column is not None and not label_required and label_column not in header:
            label_column = None  # an unlabelled file of texts to predict
        columns = [text_column] + ([label_column] if label_column is not None else [])
        missing = [name for name in columns if name not in header]
        if missing and delimiter == "," and len(header) == 1 and "\t" in header[0]:
            raise DataError(
                f"{path} looks tab-separated (its header {header[0]!r} holds tabs, no commas), but its name ends "
                f"in {path.suffix}. Rename it to .tsv."
            )
        if missing:
            raise DataError(
                f"Column {missing[0]!r} not found in {path} (columns: {', '.join(header)}). "
                "Pass the right name with --data.init_args.text_column / --data.init_args.label_column."
            )
        text_at = header.index(text_column)
        label_at = header.index(label_column) if label_column is not None else None
        line = reader.line_num  # a quoted field may span lines: a row starts after the previous one ended
        while (record := _next_record(reader, path, line + 1, max_field_chars)) is not None:
            start, line = line + 1, reader.line_num
            if not record:
                continue  # blank line between rows
            if len(record) != len(header):
                rows.bad.append(BadRow(str(path), start, f"{len(record)} fields, expected {len(header)}"))
                continue
            text = record[text_at]
            label = record[label_at].strip() if label_at is not None else None
            rows.add_checked(text, label, start, label_required and label_at is not None)
    return rows


@contextmanager
def _csv_field_limit(max_field_chars: int) -> Iterator[None]:
    """Set the csv module's field size limit (process-global) for the duration of one read, then restore it."""
    previous = csv.field_size_limit(max_field_chars)
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _next_record(reader, path: Path, start: int, max_field_chars: int) -> list[str] | None:
    """The next CSV/TSV record, ``None`` at the end; an over-long field or a malformed row is a ``DataError``."""
    try:
        return next(reader)
    except StopIteration:
        return None
    except csv.Error as err:
        if str(err).startswith("field larger than field limit"):
            raise DataError(
                f"{path}:{start}: a field longer than {max_field_chars:,} characters, the limit on one text. "
                "If it is one long document, raise --data.init_args.max_field_chars; otherwise close the quote "
                "left open on that line."
            ) from err
        delimiter = reader.dialect.delimiter
        raise DataError(f"{path}:{reader.line_num}: malformed {delimiter!r}-separated row ({err}).") from err


def _read_jsonl(path: Path, text_column: str, label_column: str | None, label_required: bool) -> Rows:
    rows = Rows(str(path))
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            if line == 1:
                raw = raw.removeprefix(_BOM)  # as CSV (utf-8-sig) and plain lines keep their first row
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                rows.bad.append(BadRow(str(path), line, "undecodable bytes (the file is not valid UTF-8 here)"))
                continue
            except json.JSONDecodeError as err:
                rows.bad.append(BadRow(str(path), line, f"not valid JSON ({err.msg})"))
                continue
            if not isinstance(record, dict):
                rows.bad.append(BadRow(str(path), line, "expected a JSON object per line"))
                continue
            text = record.get(text_column)
            label = record.get(label_column) if label_column is not None else None
            if text is not None and not isinstance(text, str):
                rows.bad.append(BadRow(str(path), line, f"{text_column!r} is not a string"))
                continue
            label = None if label is None else str(label).strip()
            rows.add_checked(text, label, line, label_required and label_column is not None)
    return rows


def _read_lines(path: Path) -> Rows:
    rows = Rows(str(path))
    with path.open("rb") as f:
        for line, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError:
                rows.bad.append(BadRow(str(path), line, "undecodable bytes (the file is not valid UTF-8 here)"))
                continue
            if line == 1:
                text = text.removeprefix("\ufeff")  # byte-order mark of some editors
            reason = _clean_text(text, None, labelled=False)
            if reason:
                rows.bad.append(BadRow(str(path), line, reason))
            else:
                rows.add(text, None, line)
    return rows


def handle_bad_rows(bad: list[BadRow], on_bad_row: OnBadRow) -> None:
    """Stop at the first bad row (``error``) or warn with their count and first locations (``skip``)."""
    if not bad:
        return
    if on_bad_row == "error":
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(
            f"Bad row at {bad[0]}{more}. Fix the file, or pass --data.init_args.on_bad_row skip "
            "to leave bad rows out (they are counted and reported)."
        )
    shown = "; ".join(str(row) for row in bad[:3])
    warnings.warn(f"Skipped {len(bad)} bad row(s): {shown}{' ...' if len(bad) > 3 else ''}", stacklevel=3)
