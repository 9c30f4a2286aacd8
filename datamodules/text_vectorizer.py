"""scikit-learn text vectorizers as checkpoint-safe state, and sparse batches of their output.

A fitted vectorizer is saved as plain data (settings, the vocabulary packed into two tensors, ``idf``)
so ``torch.load(weights_only=True)`` reads it back; the vectorizer is rebuilt from that state,
so restored vectors are the ones scikit-learn produced in training.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_warn
from torch.utils.data import Dataset

from errors import CheckpointError
from storage.checkpoints import read_checkpoint

if TYPE_CHECKING:  # scikit-learn and scipy load where a vectorizer is made or read, not for the CLI's link below
    import scipy.sparse
    from sklearn.feature_extraction.text import CountVectorizer

VectorizerKind = Literal["tfidf", "count"]
STATE_VERSION = 2  # 2: the vocabulary packed into tensors; 1 (a str -> int dict) is still read
TOKEN_PATTERN = r"(?u)\b\w\w+\b"  # scikit-learn's default: words of two or more characters
_OVERLAP_SAMPLE = 2000  # validation texts looked up for terms shared with the training vocabulary


def make_vectorizer(
    kind: VectorizerKind,
    max_features: int | None,
    ngram_range: tuple[int, int],
    min_df: int | float,
    sublinear_tf: bool,
    lowercase: bool,
    vocabulary: dict[str, int] | None = None,
    token_pattern: str = TOKEN_PATTERN,
) -> CountVectorizer:
    """An unfitted ``TfidfVectorizer`` (a ``CountVectorizer`` subclass) or ``CountVectorizer``."""
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

    common = {"max_features": max_features, "ngram_range": tuple(ngram_range), "min_df": min_df}
    common |= {"lowercase": lowercase, "vocabulary": vocabulary, "token_pattern": token_pattern}
    if kind == "tfidf":
        return TfidfVectorizer(sublinear_tf=sublinear_tf, **common)
    return CountVectorizer(**common)


def check_vectorizer_settings(
    kind: str,
    max_features: int | None,
    ngram_range: tuple[int, int],
    min_df: int | float,
    sublinear_tf: bool,
    token_pattern: str,
) -> None:
    """Refuse, in one line naming the argument, a vectorizer setting scikit-learn would fail on later."""
    if kind not in ("tfidf", "count"):
        raise ValueError(f"Expected `vectorizer` to be one of (tfidf, count), got {kind!r}.")
    if max_features is not None and max_features < 1:
        raise ValueError(f"Expected `max_features` >= 1 or None, got {max_features}.")
    if len(ngram_range) != 2 or not 1 <= ngram_range[0] <= ngram_range[1]:
        raise ValueError(f"Expected `ngram_range` to be (min_n, max_n) with 1 <= min_n <= max_n, got {ngram_range}.")
    if not (isinstance(min_df, int) and min_df >= 1) and not (isinstance(min_df, float) and 0 < min_df <= 1):
        raise ValueError(f"Expected `min_df` to be a count >= 1 or a fraction in (0, 1], got {min_df!r}.")
    if sublinear_tf and kind == "count":
        raise ValueError("Expected `sublinear_tf` false with `vectorizer` 'count' (it applies to 'tfidf' only).")
    try:
        groups = re.compile(token_pattern).groups
    except re.error as err:
        raise ValueError(f"Expected `token_pattern` a regular expression, got {token_pattern!r} ({err}).") from None
    if groups > 1:
        raise ValueError(f"Expected `token_pattern` with at most one capturing group, got {token_pattern!r}.")


def vectorizer_state(vectorizer: CountVectorizer) -> dict:
    """Plain-data state of a fitted vectorizer: ``torch.load(weights_only=True)`` accepts it."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    tfidf = isinstance(vectorizer, TfidfVectorizer)
    state = {
        "version": STATE_VERSION,
        "kind": "tfidf" if tfidf else "count",
        "max_features": vectorizer.max_features,
        "ngram_range": list(vectorizer.ngram_range),
        "min_df": vectorizer.min_df,
        "sublinear_tf": bool(tfidf and vectorizer.sublinear_tf),
        "lowercase": vectorizer.lowercase,
        "token_pattern": vectorizer.token_pattern,
        "vocabulary": {term: int(index) for term, index in vectorizer.vocabulary_.items()},
    }
    if tfidf:
        state["idf"] = torch.from_numpy(np.asarray(vectorizer.idf_, dtype=np.float64).copy())  # (D,)
    return state


def checkpoint_state(vectorizer: CountVectorizer) -> dict:
    """:func:`vectorizer_state` as a checkpoint holds it: the vocabulary as its terms' UTF-8 text in column order
    (``terms``, uint8) and each term's end in characters (``term_ends``, int64). A dict of ``D`` terms costs the
    checkpoint's pickler two objects per term at every save (24,500 terms: 0.1 s of every checkpoint).

    Example:
        >>> from sklearn.feature_extraction.text import TfidfVectorizer
        >>> state = checkpoint_state(TfidfVectorizer().fit(["Good car", "bad café"]))
        >>> state["terms"].dtype, state["term_ends"].tolist()
        (torch.uint8, [3, 7, 10, 14])
        >>> vectorizer_from_state(state, "example").vocabulary_
        {'bad': 0, 'café': 1, 'car': 2, 'good': 3}
    """
    state = vectorizer_state(vectorizer)
    terms = [""] * len(state["vocabulary"])
    for term, index in state.pop("vocabulary").items():
        terms[index] = term
    text = "".join(terms).encode("utf-8")
    state["terms"] = torch.frombuffer(bytearray(text), dtype=torch.uint8) if text else torch.zeros(0, dtype=torch.uint8)
    state["term_ends"] = torch.from_numpy(np.cumsum([len(term) for term in terms], dtype=np.int64))
    return state


def _unpacked_vocabulary(state: dict) -> dict[str, int]:
    """The ``term -> column`` vocabulary of a version 1 (a dict) or version 2 (:func:`checkpoint_state`) state."""
    if state["version"] == 1:
        return dict(state["vocabulary"])
    text = bytes(state["terms"].numpy()).decode("utf-8")
    ends = state["term_ends"].tolist()
    return {text[start:end]: index for index, (start, end) in enumerate(zip([0, *ends], ends, strict=False))}


def vectorizer_json_state(vectorizer: CountVectorizer) -> dict:
    """:func:`vectorizer_state` as JSON-ready data (idf as a list: float64 values, kept exactly), with the
    scikit-learn setting ``transform`` also depends on (``norm``): ``runtime.features.TextFeaturizer``
    rebuilds the vectorizer from it without scikit-learn."""
    state = vectorizer_state(vectorizer)
    if "idf" in state:
        state["idf"] = state["idf"].tolist()
    return state | {"norm": getattr(vectorizer, "norm", None)}


def vectorizer_from_state(state: dict, source: str) -> CountVectorizer:
    """Rebuild the fitted vectorizer saved by :func:`vectorizer_state`; ``source`` names it in errors."""
    readable = isinstance(state, dict) and ("vocabulary" in state if state.get("version") == 1 else "terms" in state)
    if not readable or state.get("version") not in (1, STATE_VERSION):
        raise CheckpointError(
            f"{source} holds no text vectorizer this version can read (looked for state version 1 or {STATE_VERSION}). "
            "Use a checkpoint written by the text datamodule, or refit by training again."
        )
    vectorizer = make_vectorizer(
        state["kind"],
        state["max_features"],
        tuple(state["ngram_range"]),
        state["min_df"],
        state["sublinear_tf"],
        state["lowercase"],
        vocabulary=_unpacked_vocabulary(state),
        token_pattern=state.get("token_pattern", TOKEN_PATTERN),  # checkpoints from before the setting
    )
    vectorizer._validate_vocabulary()  # sets vocabulary_ from the fixed vocabulary, as fit would
    if state["kind"] == "tfidf":
        vectorizer.idf_ = state["idf"].numpy()
    return vectorizer


def vocabulary_size(vectorizer: CountVectorizer) -> int:
    """Width of the vectors a fitted vectorizer produces (may be below ``max_features``)."""
    return len(vectorizer.vocabulary_)


def csr_to_torch(matrix: scipy.sparse.csr_matrix) -> torch.Tensor:
    """A scipy CSR matrix as a coalesced float32 sparse COO tensor of the same shape.

    COO because the MLP's ``sparse_linear`` reads its row and column indices directly; scikit-learn's
    output has sorted, duplicate-free indices, so the tensor is coalesced without work.
    """
    matrix.sort_indices()
    rows = np.repeat(np.arange(matrix.shape[0], dtype=np.int64), np.diff(matrix.indptr))
    indices = torch.from_numpy(np.vstack([rows, matrix.indices.astype(np.int64)]))  # (2, nnz)
    values = torch.from_numpy(matrix.data.astype(np.float32, copy=False))
    return torch.sparse_coo_tensor(indices, values, matrix.shape, is_coalesced=True, check_invariants=False)


class SparseBatchDataset(Dataset):
    """Rows of a scipy CSR matrix (and labels), served a whole batch per ``__getitems__`` call.

    The matrix stays sparse in memory; each batch is a sparse COO tensor, or dense with ``dense=True``.

    Example:
        >>> import scipy.sparse
        >>> features = scipy.sparse.csr_matrix(np.array([[0.0, 1.0], [2.0, 0.0], [0.0, 3.0]]))
        >>> ds = SparseBatchDataset(features, torch.tensor([0, 1, 0]))
        >>> x, y = ds.__getitems__([1, 2])
        >>> x.to_dense().tolist(), y.tolist()
        ([[2.0, 0.0], [0.0, 3.0]], [1, 0])
    """

    def __init__(self, features: scipy.sparse.csr_matrix, labels: torch.Tensor | None, dense: bool = False) -> None:
        if labels is not None and features.shape[0] != len(labels):
            raise ValueError(f"Expected as many labels as rows, got {len(labels)} labels for {features.shape[0]} rows.")
        self.features = features.tocsr().astype(np.float32, copy=False)  # the batches' dtype, rounded once
        self.labels = labels
        self.dense = dense

    def __len__(self) -> int:
        return self.features.shape[0]

    def __getitem__(self, index: int):
        batch = self.__getitems__([index])  # a batch of one; drop the batch dimension
        return batch[0] if self.labels is None else (batch[0][0], batch[1][0])

    def __getitems__(self, indices: Sequence[int]):
        batch = self.features[np.asarray(indices, dtype=np.int64)]  # (B, D) CSR
        x = torch.from_numpy(batch.toarray().astype(np.float32)) if self.dense else csr_to_torch(batch)
        if self.labels is None:
            return x
        return x, self.labels[torch.as_tensor(indices, dtype=torch.long)]  # (B, D), (B,)


def read_checkpoint_state(path: str, key: str = "TextDataModule") -> dict:
    """The text datamodule's state saved in a Lightning checkpoint (read with ``weights_only=True``)."""
    checkpoint = read_checkpoint(path)
    if key not in checkpoint:
        raise CheckpointError(
            f"Checkpoint {path} holds no {key} state (no fitted vectorizer in it). "
            "Pass a checkpoint trained with the text datamodule."
        )
    return checkpoint[key]


def link_checkpoint_vectorizer(config) -> None:
    """CLI glue: let a text datamodule take its vectorizer from the run's ``--ckpt_path``.

    ``config`` is the subcommand's namespace; nothing changes unless the data class has a
    ``vectorizer_checkpoint`` argument left unset and ``ckpt_path`` is an existing file.
    """
    ckpt_path = config.get("ckpt_path")
    init_args = config.get("data", {}).get("init_args")
    if not ckpt_path or init_args is None or "vectorizer_checkpoint" not in init_args:
        return
    if init_args.get("vectorizer_checkpoint") is None and Path(ckpt_path).is_file():
        init_args["vectorizer_checkpoint"] = str(ckpt_path)


def warn_unshared_terms(vectorizer, rows, token_pattern: str) -> None:
    """Warn when most validation texts (``rows``, the first :data:`_OVERLAP_SAMPLE`) share no term with the training
    vocabulary: the model sees them as empty, and its accuracy is the majority class's share. The usual cause is a
    script written without spaces (Chinese, Japanese, Thai) under a pattern that cuts words at spaces: a term per text.
    """
    texts = rows.texts[:_OVERLAP_SAMPLE]
    if not texts:
        return
    unknown = int((vectorizer.transform(texts).getnnz(axis=1) == 0).sum())
    if 2 * unknown <= len(texts):
        return
    rank_zero_warn(
        f"{unknown:,} of {len(texts):,} validation texts of {rows.path} share no term with the "
        f"{vocabulary_size(vectorizer):,}-term training vocabulary, so the model sees them as empty. If the texts do "
        f"not separate words with spaces (Chinese, Japanese, Thai), token_pattern '{token_pattern}' makes each "
        "sentence one term: pass --data.init_args.token_pattern '(?u)\\w' (one character per term), e.g. with "
        "--data.init_args.ngram_range [1,2]."
    )
