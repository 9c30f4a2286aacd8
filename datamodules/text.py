"""Labelled text as TF-IDF (or count) vectors, so a user's own corpus is a config, not code.

Reads CSV, TSV or JSON Lines (or the aclImdb reviews), splits one file into stratified, seeded
train/val/test parts, fits a scikit-learn vectorizer on the training part only and keeps the
matrices sparse. The fitted vectorizer travels in the checkpoint (``state_dict``), so ``test``,
``predict`` and resumed runs see exactly the vectors the model was trained on.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

import scipy.sparse
import torch

from datamodules.batching import InMemoryDataModule
from datamodules.fingerprint import text_fingerprint
from datamodules.text_corpus import MAX_FIELD_CHARS, OnBadRow, Rows, read_rows
from datamodules.text_imdb import ensure_imdb, read_imdb_split
from datamodules.text_splits import read_predict_rows, split_corpus
from datamodules.text_vectorizer import (
    TOKEN_PATTERN,
    SparseBatchDataset,
    VectorizerKind,
    check_vectorizer_settings,
    checkpoint_state,
    csr_to_torch,
    make_vectorizer,
    read_checkpoint_state,
    vectorizer_from_state,
    vectorizer_json_state,
    vocabulary_size,
    warn_unshared_terms,
)
from errors import CheckpointError, DataError


class TextDataModule(InMemoryDataModule):
    """A labelled text corpus served as sparse vectors from a scikit-learn vectorizer.

    Args:
        path: One labelled CSV/TSV/JSON Lines file, split here into train/val/test.
        text_column: Column (JSON key) holding the text.
        label_column: Column (JSON key) holding the label.
        classes: Labels to keep, in class-index order; rows with other labels are left out (and
            counted). ``None`` keeps every label of the training data, sorted.
        train_path: Training file, instead of ``path``; ``val_path``/``test_path`` then give the other
            parts, and a missing one is split off the training file.
        val_path: Validation file (used with ``train_path``).
        test_path: Test file (used with ``train_path``).
        predict_path: Texts for ``predict``: one per line, or CSV/TSV/JSON Lines with ``text_column``
            (a label column there is checked against ``classes``).
        source: ``files`` reads the paths above; ``imdb`` reads aclImdb under ``data_dir`` (its official
            test set is the test split).
        data_dir: Where ``source: imdb`` finds or downloads ``aclImdb/``.
        download: Download and extract aclImdb with torchvision when it is missing.
        val_size: Validation part: a fraction of the whole corpus, or a row count.
        test_size: Test part (when no test file): a fraction of the whole corpus, or a row count.
        vectorizer: ``tfidf`` (``TfidfVectorizer``) or ``count`` (``CountVectorizer``).
        max_features: Vocabulary cap (most frequent terms); the real width can be smaller.
        ngram_range: Smallest and largest n-gram length.
        min_df: Minimum document frequency of a term: a count, or a fraction of documents.
        sublinear_tf: Use ``1 + log(tf)`` (TF-IDF only).
        lowercase: Lowercase texts before tokenizing.
        token_pattern: The regular expression a token matches (scikit-learn's default keeps words of two or more
            characters; ``(?u)\\b\\w+\\b|[^\\w\\s]`` also keeps one-character words and each punctuation mark).
        vectorizer_checkpoint: Take the fitted vectorizer and classes from this Lightning checkpoint
            instead of fitting them (``test``/``predict`` without the training corpus).
        on_bad_row: ``error`` stops at the first bad row (file and line named); ``skip`` warns, counts
            the bad rows and goes on (``predict`` lists them in its output).
        max_field_chars: Longest text one CSV/TSV field may hold, in characters (default 64 Mi: a whole
            book fits; a longer field is most likely a quote left open, and is refused naming its line).
        sparse: Serve batches as sparse tensors (the MLP consumes them directly); ``False`` densifies
            each batch for models that need dense input.
        batch_size: Examples per batch.
        num_workers: DataLoader worker processes (0 is fastest: the data is in memory).
        seed: Seed of the stratified split and of the per-epoch shuffling.
    """

    predict_split = "predict"  # the texts of `predict_path`
    input_kind = "text"  # what a deployable bundle of its model reads (``preprocessing()["input"]``)

    def __init__(
        self,
        path: str | None = None,
        text_column: str = "text",
        label_column: str = "label",
        classes: list[str] | None = None,
        train_path: str | None = None,
        val_path: str | None = None,
        test_path: str | None = None,
        predict_path: str | None = None,
        source: Literal["files", "imdb"] = "files",
        data_dir: str = "data",
        download: bool = True,
        val_size: int | float = 0.1,
        test_size: int | float = 0.2,
        vectorizer: VectorizerKind = "tfidf",
        max_features: int | None = 5000,
        ngram_range: tuple[int, int] = (1, 1),
        min_df: int | float = 1,
        sublinear_tf: bool = False,
        lowercase: bool = True,
        token_pattern: str = TOKEN_PATTERN,
        vectorizer_checkpoint: str | None = None,
        on_bad_row: OnBadRow = "error",
        max_field_chars: int = MAX_FIELD_CHARS,
        sparse: bool = True,
        batch_size: int = 64,
        num_workers: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__()
        _validate_choice("source", source, ("files", "imdb"))
        _validate_choice("on_bad_row", on_bad_row, ("error", "skip"))
        for name, size in (("val_size", val_size), ("test_size", test_size)):
            if not (isinstance(size, int) and size >= 1) and not (isinstance(size, float) and 0 < size < 1):
                raise ValueError(f"Expected `{name}` to be a fraction in (0, 1) or a row count >= 1, got {size!r}.")
        if isinstance(val_size, float) and isinstance(test_size, float) and val_size + test_size >= 1:
            raise ValueError(f"Expected `val_size` + `test_size` < 1, got {val_size} + {test_size}.")
        if max_field_chars < 1:
            raise ValueError(f"Expected `max_field_chars` >= 1, got {max_field_chars}.")
        check_vectorizer_settings(vectorizer, max_features, ngram_range, min_df, sublinear_tf, token_pattern)
        if classes is not None and (len(classes) < 2 or len(set(classes)) != len(classes)):
            raise ValueError(f"Expected `classes` to list at least two distinct labels, got {classes}.")
        if path is not None and train_path is not None:
            raise ValueError("Expected one of `path` (split here) and `train_path` (split given), got both.")
        if source == "imdb" and (path or train_path or val_path or test_path):
            raise ValueError("Expected no `path`/`train_path`/`val_path`/`test_path` with `source` 'imdb'.")
        if batch_size < 1:
            raise ValueError(f"Expected `batch_size` >= 1, got {batch_size}.")
        if num_workers < 0:
            raise ValueError(f"Expected `num_workers` >= 0, got {num_workers}.")
        if seed < 0:
            raise ValueError(f"Expected `seed` >= 0, got {seed}.")
        self.save_hyperparameters()
        self._classes: list[str] | None = list(classes) if classes else None
        self._vectorizer = None
        self._splits: dict[str, Rows] = {}
        self._predict: Rows | None = None
        self._datasets: dict[str, SparseBatchDataset] = {}
        self._state: tuple | None = None  # (vectorizer, its checkpoint state)

    # Read by the CLI right after construction (linked into the model), so fitted lazily here.
    @property
    def input_dim(self) -> int:
        """Width of the vectors served: the fitted vocabulary size (at most ``max_features``)."""
        return vocabulary_size(self.vectorizer)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def classes(self) -> list[str]:
        """Label names in class-index order."""
        if self._classes is None:
            self.vectorizer  # noqa: B018  (a checkpoint or the training data decides the classes)
        if self._classes is None:
            self._read_splits()
        return self._classes

    @property
    def vectorizer(self):
        """The fitted scikit-learn vectorizer: from ``vectorizer_checkpoint``, or fitted on the train split."""
        if self._vectorizer is None:
            if self.hparams.vectorizer_checkpoint:
                self.load_state_dict(read_checkpoint_state(self.hparams.vectorizer_checkpoint, type(self).__qualname__))
            else:
                self._fit_vectorizer()
        return self._vectorizer

    def preprocessing(self) -> dict:
        """How raw text becomes the model's input, as plain data (JSON-ready), for a deployable bundle."""
        return {"input": "text", "vectorizer": vectorizer_json_state(self.vectorizer)}

    def raw_test_inputs(self) -> list[str]:
        """The test split's texts as read: what a deployed model is given."""
        return self.split_rows("test").texts

    def featurize_raw(self, texts: list[str]) -> torch.Tensor:
        """Texts -> the sparse ``(B, input_dim)`` batch training and ``predict`` use (scikit-learn's TF-IDF)."""
        return csr_to_torch(self.vectorize(texts))

    def vectorize(self, texts: list[str]) -> scipy.sparse.csr_matrix:
        """``(N, input_dim)`` sparse vectors of ``texts`` from the fitted vectorizer."""
        return self.vectorizer.transform(texts).tocsr()

    def split_rows(self, split: Literal["train", "val", "test"]) -> Rows:
        """The labelled rows of one split (read and split on first use)."""
        self._read_splits()
        return self._splits[split]

    @property
    def predict_rows(self) -> Rows:
        """Texts to predict with their source lines; ``.bad`` holds the skipped rows."""
        if self._predict is None:
            self._predict = self._read_predict()
        return self._predict

    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":
            self.predict_rows  # noqa: B018  (read now, so bad rows stop the run before the model runs)
        else:
            self._read_splits()

    def state_dict(self) -> dict:
        """The fitted vectorizer and classes as plain data (``torch.load(weights_only=True)`` reads it); built
        once per fitted vectorizer, as every checkpoint of the run holds it."""
        if self._state is None or self._state[0] is not self.vectorizer:
            self._state = (self.vectorizer, {"vectorizer": checkpoint_state(self.vectorizer)})
        data = {"data": self.data_fingerprint} if self._splits else {}  # what a resumed fit must be given
        return self._state[1] | {"classes": list(self.classes)} | data

    @cached_property
    def data_fingerprint(self) -> dict:
        """The corpus and split served (:mod:`datamodules.fingerprint`); checkpoints keep it for a resumed fit."""
        self._read_splits()
        return text_fingerprint(self.hparams, self._splits)

    def load_state_dict(self, state_dict: dict) -> None:
        """Use a checkpoint's vectorizer and classes; vectors are rebuilt from them when next served."""
        vectorizer = vectorizer_from_state(state_dict.get("vectorizer"), "The checkpoint")
        classes = [str(name) for name in state_dict.get("classes", [])]
        if self._classes is not None and self._classes != classes:
            raise CheckpointError(
                f"The checkpoint was trained on classes ({', '.join(classes)}), the data config gives "
                f"({', '.join(self._classes)}). Pass --data.init_args.classes [{','.join(classes)}]."
            )
        # A width that differs from the model's is refused by the model's own checkpoint check.
        self._vectorizer, self._classes = vectorizer, classes
        self._datasets.clear()

    def dataset(self, split: str) -> SparseBatchDataset:
        # Vectorized when a loader is built: Lightning restores a checkpoint's vectorizer after setup().
        if split not in self._datasets:
            rows = self.predict_rows if split == "predict" else self.split_rows(split)
            self._datasets[split] = self._dataset_of(split, rows, self.vectorize(rows.texts))  # (N, input_dim) sparse
        return self._datasets[split]

    def _dataset_of(self, split: str, rows: Rows, features: scipy.sparse.csr_matrix) -> SparseBatchDataset:
        labels = None
        if split != "predict":
            index = {name: i for i, name in enumerate(self.classes)}
            labels = torch.tensor([index[label] for label in rows.labels], dtype=torch.long)  # (N,)
        return SparseBatchDataset(features, labels, dense=not self.hparams.sparse)

    def _fit_vectorizer(self) -> None:
        h = self.hparams
        vectorizer = make_vectorizer(
            h.vectorizer, h.max_features, h.ngram_range, h.min_df, h.sublinear_tf, h.lowercase, None, h.token_pattern
        )
        train = self.split_rows("train")
        try:
            features = vectorizer.fit_transform(train.texts)  # one pass: the training vectors come with the fit
        except ValueError as err:  # e.g. no term left after min_df, or only stop words
            raise DataError(
                f"Could not fit the {h.vectorizer} vectorizer on {len(train)} training texts of {train.path} ({err}). "
                "Lower --data.init_args.min_df or check the text column."
            ) from err
        self._vectorizer = vectorizer
        self._datasets["train"] = self._dataset_of("train", train, features)
        warn_unshared_terms(vectorizer, self.split_rows("val"), h.token_pattern)

    def _read_splits(self) -> None:
        if self._splits:
            return
        h = self.hparams
        if h.source == "imdb":
            root = ensure_imdb(Path(h.data_dir), h.download)
            train, val, test = read_imdb_split(root, "train"), None, read_imdb_split(root, "test")
        else:
            if h.path is None and h.train_path is None:
                raise DataError(
                    "No training corpus configured (looked for `path` and `train_path`, both unset). Pass "
                    "--data.init_args.path <corpus.csv>, or --data.init_args.vectorizer_checkpoint for predict."
                )
            train = self._read_labelled(h.path or h.train_path)
            val = self._read_labelled(h.val_path) if h.val_path else None
            test = self._read_labelled(h.test_path) if h.test_path else None
        self._splits, self._classes = split_corpus(
            train, val, test, self._classes, bool(h.classes), h.val_size, h.test_size, h.seed, h.on_bad_row
        )

    def _read_labelled(self, path: str) -> Rows:
        h = self.hparams
        return read_rows(Path(path), h.text_column, h.label_column, max_field_chars=h.max_field_chars)

    def _read_predict(self) -> Rows:
        h = self.hparams
        if not h.predict_path:
            raise DataError(
                "`predict` needs texts and no `predict_path` is set. Pass --data.init_args.predict_path <file> "
                f"(one text per line, or CSV/TSV/JSON Lines with a {h.text_column!r} column)."
            )
        path = Path(h.predict_path)
        return read_predict_rows(path, h.text_column, h.label_column, self.classes, h.on_bad_row, h.max_field_chars)


def _validate_choice(name: str, value: str, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"Expected `{name}` to be one of ({', '.join(allowed)}), got {value!r}.")
