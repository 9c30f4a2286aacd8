"""Corpus parsing: CSV, TSV, JSON Lines, plain lines and aclImdb trees, and every kind of bad row."""

from __future__ import annotations

import csv
import json

import pytest

from datamodules.text import TextDataModule
from datamodules.text_corpus import MAX_FIELD_CHARS, BadRow, handle_bad_rows, read_rows
from datamodules.text_imdb import ensure_imdb, read_imdb_split
from errors import DataError
from tests.helpers import write_text_corpus


def test_csv_keeps_quoted_commas_and_newlines_with_start_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text('text,label\n"good, very good",positive\n"bad\nand worse",negative\nfine,positive\n')
    rows = read_rows(path, "text", "label")
    assert rows.texts == ["good, very good", "bad\nand worse", "fine"]
    assert rows.labels == ["positive", "negative", "positive"]
    assert rows.lines == [2, 3, 5]  # the quoted newline moves the next row to line 5
    assert rows.bad == []


def test_tsv_and_jsonl_read_the_same_rows(tmp_path):
    (tmp_path / "c.tsv").write_text("id\ttext\tlabel\n1\tgood day\tpositive\n2\tbad day\tnegative\n")
    records = [{"text": "good day", "label": "positive"}, {"text": "bad day", "label": "negative", "extra": 1}]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in records) + "\n\n")
    tsv = read_rows(tmp_path / "c.tsv", "text", "label")
    jsonl = read_rows(tmp_path / "c.jsonl", "text", "label")
    assert tsv.texts == jsonl.texts == ["good day", "bad day"]
    assert tsv.labels == jsonl.labels == ["positive", "negative"]


def test_utf8_bom_and_custom_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes("\ufeffsentence,y\nhello,a\n".encode())
    rows = read_rows(path, "sentence", "y")
    assert (rows.texts, rows.labels) == (["hello"], ["a"])


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("c.csv", b"text,label\ngood,positive\n  ,negative\n", "c.csv:3: empty text"),
        ("c.csv", b"text,label\ngood,positive\nbad \xff\xfe,negative\n", "c.csv:3: undecodable bytes"),
        ("c.csv", b"text,label\ngood,positive\nbad,\n", "c.csv:3: missing label"),
        ("c.csv", b"text,label\ngood,positive\nbad,negative,extra\n", "c.csv:3: 3 fields, expected 2"),
        ("c.jsonl", b'{"text": "good", "label": "p"}\n{"text": "", "label": "n"}\n', "c.jsonl:2: empty text"),
        ("c.jsonl", b'{"text": "good", "label": "p"}\n{"text": "\xff", "label": "n"}\n', "c.jsonl:2: undecodable"),
        ("c.jsonl", b'{"text": "good", "label": "p"}\n{"text": "bad"\n', "c.jsonl:2: not valid JSON"),
        ("c.jsonl", b'{"text": "good", "label": "p"}\n{"label": "n"}\n', "c.jsonl:2: missing text field"),
        ("c.jsonl", b'{"text": "good", "label": "p"}\n["bad", "n"]\n', "c.jsonl:2: expected a JSON object"),
    ],
    ids=["csv-empty", "csv-bytes", "csv-no-label", "csv-fields", "jsonl-empty", "jsonl-bytes", "jsonl-json",
         "jsonl-no-text", "jsonl-not-object"],
)  # fmt: skip
def test_bad_rows_name_file_and_line(tmp_path, name, content, reason):
    path = tmp_path / name
    path.write_bytes(content)
    rows = read_rows(path, "text", "label")
    assert len(rows) == 1 and len(rows.bad) == 1
    assert str(rows.bad[0]).startswith(f"{tmp_path}/{reason}")
    with pytest.raises(DataError, match=f"Bad row at .*{reason}.*on_bad_row skip"):
        handle_bad_rows(rows.bad, "error")


def test_lines_file_reports_empty_and_undecodable_lines(tmp_path):
    path = tmp_path / "texts.txt"
    path.write_bytes("\ufefffirst text\n\nthird \xe9\n".encode() + b"fourth \xff\n")
    rows = read_rows(path, "text", "label", allow_lines=True)
    assert rows.texts == ["first text", "third \xe9"]
    assert rows.lines == [1, 3]
    assert [(bad.line, bad.reason) for bad in rows.bad] == [
        (2, "empty text"),
        (4, "undecodable bytes (the file is not valid UTF-8 here)"),
    ]


def test_skip_warns_with_count_and_locations():
    bad = [BadRow("f.csv", line, "empty text") for line in range(2, 7)]
    with pytest.warns(UserWarning, match=r"Skipped 5 bad row\(s\): f.csv:2: empty text; f.csv:3.* \.\.\."):
        handle_bad_rows(bad, "skip")
    handle_bad_rows([], "error")  # nothing bad, nothing raised


def test_unlabelled_csv_for_prediction(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("text\nhello\nworld\n")
    rows = read_rows(path, "text", "label", allow_lines=True, label_required=False)
    assert rows.texts == ["hello", "world"] and rows.labels == [None, None]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("c.csv", "sentence,label\nhi,a\n", r"Column 'text' not found in .*c.csv \(columns: sentence, label\)"),
        ("c.csv", "", r"c.csv is empty"),
        ("c.txt", "hi\n", r"Cannot tell the format of .*c.txt from its suffix '.txt'"),
    ],
    ids=["missing-column", "empty-file", "unknown-suffix"],
)
def test_file_level_errors(tmp_path, name, content, match):
    (tmp_path / name).write_text(content)
    with pytest.raises(DataError, match=match):
        read_rows(tmp_path / name, "text", "label")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"Text file .*nowhere.csv not found"):
        read_rows(tmp_path / "nowhere.csv", "text", "label")


def test_imdb_tree_parser(imdb_root):
    root = ensure_imdb(imdb_root, download=False)  # present: nothing is downloaded
    train = read_imdb_split(root, "train")
    assert len(train) == 24 and train.bad == []
    assert train.labels[:12] == ["negative"] * 12 and train.labels[12:] == ["positive"] * 12
    assert "<br />" not in train.texts[0]


def test_imdb_bad_review_files(imdb_root):
    folder = imdb_root / "aclImdb" / "train" / "pos"
    (folder / "90_9.txt").write_bytes(b"\xff\xfe broken")
    (folder / "91_9.txt").write_text("   ")
    rows = read_imdb_split(imdb_root / "aclImdb", "train")
    assert [(bad.path.rsplit("/", 1)[-1], bad.reason.split(" ")[0]) for bad in rows.bad] == [
        ("90_9.txt", "undecodable"),
        ("91_9.txt", "empty"),
    ]


def test_imdb_missing_without_download(tmp_path):
    with pytest.raises(DataError, match=r"IMDB reviews not found in .*aclImdb .*`download` is off"):
        ensure_imdb(tmp_path, download=False)


def _long_document_corpus(path, text: str, delimiter: str = ",") -> None:
    """Two short rows, then ``text`` (quoted, at line 4), then one more short row."""
    rows = [f"text{delimiter}label", f"good day{delimiter}positive", f"bad day{delimiter}negative"]
    rows += [f'"{text}"{delimiter}positive', f"fine day{delimiter}positive"]
    path.write_text("\n".join(rows) + "\n")


@pytest.fixture
def default_csv_limit():
    """The csv module's default field limit (131,072), whatever an earlier test or import set."""
    previous = csv.field_size_limit(131_072)
    yield
    csv.field_size_limit(previous)


@pytest.mark.parametrize("name", ["c.csv", "c.tsv"], ids=["csv", "tsv"])
def test_long_document_is_read_whole(tmp_path, name, default_csv_limit):
    document = "good " * 200_000  # 1 MB, past the csv module's default limit of 131,072
    _long_document_corpus(tmp_path / name, document, "," if name == "c.csv" else "\t")
    limit_before = csv.field_size_limit()
    rows = read_rows(tmp_path / name, "text", "label")
    assert rows.texts == ["good day", "bad day", document, "fine day"]
    assert rows.lines == [2, 3, 4, 5] and rows.bad == []
    assert csv.field_size_limit() == limit_before  # set for the read only


def test_text_datamodule_reads_a_long_document(tmp_path, default_csv_limit):
    path = write_text_corpus(tmp_path / "c.csv", n=40)
    document = "great " * 200_000
    path.write_text(path.read_text() + f'"{document}",positive\n')
    dm = TextDataModule(str(path), val_size=4, test_size=4)
    dm.setup("fit")
    texts = [text for split in ("train", "val", "test") for text in dm.split_rows(split).texts]
    assert len(texts) == 41 and document in texts


def test_field_past_the_limit_names_file_line_and_limit(tmp_path):
    path = tmp_path / "c.csv"
    _long_document_corpus(path, "x" * 1_000)
    assert read_rows(path, "text", "label", max_field_chars=1_000).texts[2] == "x" * 1_000  # the limit is inclusive
    _long_document_corpus(path, "spans\nlines " * 100)  # 1,200 characters over 101 lines, starting at line 4
    limit_before = csv.field_size_limit()
    match = (
        rf"^{path}:4: a field longer than 1,000 characters, the limit on one text\. If it is one long document, "
        r"raise --data\.init_args\.max_field_chars; otherwise close the quote"
    )
    with pytest.raises(DataError, match=match):
        read_rows(path, "text", "label", max_field_chars=1_000)
    assert csv.field_size_limit() == limit_before  # restored after an error too


def test_default_field_limit_and_its_validation(tmp_path):
    assert MAX_FIELD_CHARS == 64 * 2**20
    with pytest.raises(ValueError, match=r"Expected `max_field_chars` >= 1, got 0\."):
        read_rows(tmp_path / "c.csv", "text", "label", max_field_chars=0)
