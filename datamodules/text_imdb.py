"""The aclImdb reviews (Maas et al., 2011): downloaded with torchvision when missing, read as labelled rows."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from datamodules.text_corpus import BadRow, Rows
from errors import DataError

IMDB_URL = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"
IMDB_MD5 = "7c2ac02c03563afcf9b574c7e56c153a"
IMDB_LABELS = {"neg": "negative", "pos": "positive"}  # aclImdb folder -> label


def ensure_imdb(data_dir: Path, download: bool) -> Path:
    """The ``aclImdb`` folder under ``data_dir``, downloaded and extracted with torchvision if missing."""
    root = data_dir / "aclImdb"
    wanted = [root / split / folder for split in ("train", "test") for folder in IMDB_LABELS]
    if all(folder.is_dir() for folder in wanted):
        return root
    if not download:
        raise DataError(
            f"IMDB reviews not found in {root} (expected train/ and test/ with neg/ and pos/) and `download` "
            "is off. Extract aclImdb_v1.tar.gz there, pass --data.init_args.download true, or pass "
            "--data.init_args.data_dir."
        )
    from torchvision.datasets.utils import download_and_extract_archive  # only to download: 0.15 s of imports

    try:
        download_and_extract_archive(IMDB_URL, download_root=str(data_dir), md5=IMDB_MD5)
    except (OSError, RuntimeError) as err:  # URLError is an OSError; torchvision raises RuntimeError on bad MD5
        raise DataError(
            f"IMDB reviews not found in {root} and download failed ({str(err).splitlines()[0]}). "
            f"Download {IMDB_URL}, extract it into {data_dir}, or pass --data.init_args.data_dir."
        ) from err
    return root


def read_imdb_split(root: Path, split: Literal["train", "test"]) -> Rows:
    """One aclImdb split: every ``<split>/{neg,pos}/*.txt`` review, in file-name order."""
    rows = Rows(str(root / split))
    for folder, label in IMDB_LABELS.items():
        for path in sorted((root / split / folder).glob("*.txt")):
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError:
                rows.bad.append(BadRow(str(path), 1, "undecodable bytes (the file is not valid UTF-8 here)"))
                continue
            if not text.strip():
                rows.bad.append(BadRow(str(path), 1, "empty text"))
                continue
            rows.add(text.replace("<br />", " "), label, 1)  # the reviews keep HTML line breaks
    return rows
