"""Raw text to what a shipped text model reads: term ids and their TF-IDF (or count) weights.

A :class:`TextFeaturizer`, rebuilt from a fitted vectorizer's plain state (a bundle's
``preprocessing.json``), gives scikit-learn's vectors without scikit-learn: per text only its tokens are
looked up, and the result is a :class:`Bag` (the ids of the terms present and their weights, per text),
which a sparse-input artifact reads directly; ``featurize(texts)`` gives the same rows dense. numpy only.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from math import log, sqrt
from operator import mul
from typing import Any, NamedTuple

import numpy as np

# scikit-learn's TfidfVectorizer/CountVectorizer defaults, which the text datamodule's vectorizers keep.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
NORMS = ("l2", None)
# Patterns that find exactly the same tokens faster, without testing word boundaries: a greedy run of word
# characters always ends at one, and findall resumes after it, so a scan never stands inside a word. A quarter
# less time for the default pattern (2+ word characters) and for the text recipe's (words and punctuation marks).
_FASTER_EQUIVALENT = {TOKEN_PATTERN: r"(?u)\w\w+", r"(?u)\b\w+\b|[^\w\s]": r"(?u)\w+|[^\w\s]"}


class Bag(NamedTuple):
    """Texts as term bags, padded to the longest: ``ids[b, :lengths[b]]`` are text ``b``'s term columns
    (ascending, each once) and ``weights[b, :lengths[b]]`` their values; the padding has id 0, weight 0.

    Every row has room for at least one term, so an empty text is a row of padding (a zero vector).
    ``lengths`` is ``None`` when no row is padded (one text).
    """

    ids: np.ndarray  # (B, L) int64
    weights: np.ndarray  # (B, L) float32
    lengths: np.ndarray | None  # (B,) int64

    @classmethod
    def from_rows(cls, rows: Sequence[tuple[Sequence[int], Sequence[float]]]) -> Bag:
        """From ``(ids, weights)`` per text; weights are rounded once to float32.

        >>> Bag.from_rows([([1, 4], [0.6, 0.8]), ([], [])]).ids.tolist()
        [[1, 4], [0, 0]]
        """
        if len(rows) == 1:  # the batch-1 path a deployed model runs per request: no Python loop over rows
            ids, weights = rows[0]
            n = len(ids)
            if n:
                ids_out = np.fromiter(ids, np.int64, n).reshape(1, n)
                return cls(ids_out, np.fromiter(weights, np.float32, n).reshape(1, n), None)
        lengths = np.array([len(ids) for ids, _ in rows], dtype=np.int64)
        width = max(1, int(lengths.max(initial=0)))
        ids_out = np.zeros((len(rows), width), dtype=np.int64)
        weights_out = np.zeros((len(rows), width), dtype=np.float32)
        for b, (ids, weights) in enumerate(rows):
            ids_out[b, : len(ids)] = ids
            weights_out[b, : len(ids)] = weights
        return cls(ids_out, weights_out, lengths)

    @classmethod
    def from_coo(cls, rows: np.ndarray, columns: np.ndarray, values: np.ndarray, batch_size: int) -> Bag:
        """From the non-zeros of a ``(batch_size, D)`` matrix, sorted by row then column (a coalesced COO
        tensor's or a CSR matrix's order).

        >>> Bag.from_coo(np.array([0, 0, 2]), np.array([3, 7, 1]), np.array([0.5, 1.0, 2.0]), 3).weights.tolist()
        [[0.5, 1.0], [0.0, 0.0], [2.0, 0.0]]
        """
        rows = np.asarray(rows, dtype=np.int64)
        lengths = np.bincount(rows, minlength=batch_size).astype(np.int64)  # (B,)
        starts = np.cumsum(lengths) - lengths  # (B,) position of each row's first non-zero
        slots = np.arange(len(rows)) - starts[rows]  # (nnz,) position within its row
        width = max(1, int(lengths.max(initial=0)))
        ids = np.zeros((batch_size, width), dtype=np.int64)
        weights = np.zeros((batch_size, width), dtype=np.float32)
        ids[rows, slots] = columns
        weights[rows, slots] = values
        return cls(ids, weights, lengths)

    @classmethod
    def from_dense(cls, x: np.ndarray) -> Bag:
        """From dense ``(B, D)`` rows: their non-zeros."""
        rows, columns = np.nonzero(x)
        return cls.from_coo(rows, columns, x[rows, columns], len(x))

    def dense(self, input_dim: int) -> np.ndarray:
        """``(B, input_dim)`` float32 rows (the padding left out)."""
        out = np.zeros((len(self.ids), input_dim), dtype=np.float32)
        if self.lengths is None:
            present = np.ones(self.ids.shape, dtype=bool)
        else:
            present = np.arange(self.ids.shape[1]) < self.lengths[:, None]  # (B, L)
        rows = np.broadcast_to(np.arange(len(self.ids))[:, None], self.ids.shape)
        out[rows[present], self.ids[present]] = self.weights[present]
        return out


class TextFeaturizer:
    """Raw texts to the vectors scikit-learn's fitted ``TfidfVectorizer`` (or ``CountVectorizer``) gives.

    The same steps as scikit-learn's ``transform`` (``str.lower``, the token regex, word n-grams joined
    by a space, counts of in-vocabulary terms, ``1 + log(tf)`` when sublinear, times idf, each row divided
    by its L2 norm summed in column order), as the same float64 operations in the same order, then rounded
    once to float32 as the datamodule's batches are. Per text, only its tokens are looked up.

    Args:
        vocabulary: Term -> column index (the fitted ``vocabulary_``), or the terms in column order (a bundle's
            compact form: the index is the position).
        idf: ``(input_dim,)`` inverse document frequencies (``idf_``), or ``None`` for counts.
        ngram_range: Smallest and largest word n-gram length.
        lowercase: Lowercase texts before tokenizing.
        sublinear_tf: Use ``1 + log(tf)`` for the term frequency.
        norm: ``"l2"`` divides each row by its Euclidean norm; ``None`` leaves it.
        token_pattern: The regular expression a token matches.

    Example:
        >>> featurize = TextFeaturizer({"good": 0, "car": 1}, idf=None, norm=None)
        >>> featurize(["Good good CAR!", "unknown words only"]).tolist()
        [[2.0, 1.0], [0.0, 0.0]]
        >>> featurize.bag(["Good good CAR!"]).ids.tolist(), featurize.bag(["Good good CAR!"]).weights.tolist()
        ([[0, 1]], [[2.0, 1.0]])
        >>> TextFeaturizer(["good", "car"], idf=None, norm=None).vocabulary == featurize.vocabulary  # terms in order
        True
    """

    def __init__(
        self,
        vocabulary: Mapping[str, int] | Sequence[str],
        idf: Sequence[float] | np.ndarray | None,
        ngram_range: tuple[int, int] = (1, 1),
        lowercase: bool = True,
        sublinear_tf: bool = False,
        norm: str | None = "l2",
        token_pattern: str = TOKEN_PATTERN,
    ) -> None:
        if isinstance(vocabulary, Mapping):
            self.vocabulary = {str(term): int(index) for term, index in vocabulary.items()}
        elif isinstance(vocabulary, Sequence) and not isinstance(vocabulary, str):
            self.vocabulary = {str(term): index for index, term in enumerate(vocabulary)}
        else:
            raise ValueError(f"Expected `vocabulary` a term -> column mapping or a list of terms, got {vocabulary!r}.")
        self.input_dim = len(self.vocabulary)
        if sorted(self.vocabulary.values()) != list(range(self.input_dim)) or self.input_dim != len(vocabulary):
            raise ValueError(f"Expected `vocabulary` to map terms to the columns 0..{self.input_dim - 1} once each.")
        self.idf = None if idf is None else np.asarray(idf, dtype=np.float64)
        if self.idf is not None and self.idf.shape != (self.input_dim,):
            raise ValueError(f"Expected `idf` of shape ({self.input_dim},), one per term, got {self.idf.shape}.")
        min_n, max_n = (int(n) for n in ngram_range)
        if not 1 <= min_n <= max_n:
            raise ValueError(f"Expected `ngram_range` (min_n, max_n) with 1 <= min_n <= max_n, got {ngram_range}.")
        if norm not in NORMS:
            raise ValueError(f"Expected `norm` to be one of ({', '.join(map(str, NORMS))}), got {norm!r}.")
        self.ngram_range = (min_n, max_n)
        self.lowercase = lowercase
        self.sublinear_tf = sublinear_tf
        self.norm = norm
        self.token_pattern = token_pattern
        self._tokens = re.compile(_FASTER_EQUIVALENT.get(token_pattern, token_pattern)).findall
        self._idf = None if self.idf is None else self.idf.tolist()  # Python floats: the per-text path's lookups
        self._column = self.vocabulary.get

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TextFeaturizer:
        """From a text datamodule's ``preprocessing()["vectorizer"]`` (a bundle's ``preprocessing.json``) or
        its checkpoint state (``idf`` a list, array or tensor); absent ``norm`` and ``token_pattern`` are
        scikit-learn's defaults, which the datamodule's vectorizers keep."""
        missing = [key for key in ("kind", "vocabulary", "ngram_range", "lowercase") if key not in state]
        if missing:
            raise ValueError(f"The text vectorizer state lacks {', '.join(missing)}: not a fitted vectorizer's state.")
        if state["kind"] not in ("tfidf", "count"):
            raise ValueError(f"Expected vectorizer `kind` to be one of (tfidf, count), got {state['kind']!r}.")
        tfidf = state["kind"] == "tfidf"
        idf = state.get("idf") if tfidf else None
        if tfidf and idf is None:
            raise ValueError("The tfidf vectorizer state holds no `idf`: not a fitted vectorizer's state.")
        return cls(
            state["vocabulary"],
            None if idf is None else np.asarray(idf, dtype=np.float64),
            tuple(state["ngram_range"]),
            bool(state["lowercase"]),
            bool(state.get("sublinear_tf", False)),
            state.get("norm", "l2") if tfidf else None,
            state.get("token_pattern", TOKEN_PATTERN),
        )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(B, input_dim)`` float32 vectors of ``B`` texts (a text with no known term gives a zero row)."""
        return self.bag(texts).dense(self.input_dim)

    def bag(self, texts: Sequence[str]) -> Bag:
        """The texts' term ids and weights (the non-zeros of :meth:`__call__`'s rows), padded to the longest."""
        if isinstance(texts, str):
            raise ValueError("Expected a list of texts, got one str: wrap it in a list.")
        if len(texts) == 1:  # a request of one text: per-text Python is cheaper than numpy's set-up
            return Bag.from_rows([self.row(texts[0])])
        rows, ids, values = self.nonzeros(self.terms(texts))
        return Bag.from_coo(rows, ids, values, len(texts))

    def terms(self, texts: Sequence[str]) -> list[list[str]]:
        """Each text's terms (tokens, then word n-grams), as :meth:`nonzeros` reads them; they depend on the tokenizing
        settings only, so one list serves every vocabulary cut from the same vectorizer."""
        if isinstance(texts, str):
            raise ValueError("Expected a list of texts, got one str: wrap it in a list.")
        return [self._terms(text) for text in texts]

    def nonzeros(self, terms: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`row` of many texts at once, from their :meth:`terms`: ``(text index, column, float64 value)`` of
        every non-zero, by text then column; the values are :meth:`row`'s bit for bit (the same float64 products,
        quotients and correctly rounded square roots; each norm's squares summed one column at a time, in order).

        >>> featurize = TextFeaturizer({"good": 0, "car": 1}, idf=[1.0, 2.0])
        >>> [a.tolist() for a in featurize.nonzeros([["car", "good", "car"], [], ["car"]])]
        [[0, 0, 2], [0, 1, 1], [0.24253562503633297, 0.9701425001453319, 1.0]]
        """
        counts = np.fromiter(map(len, terms), np.int64, len(terms))
        found = np.fromiter(
            map(self.vocabulary.get, itertools.chain.from_iterable(terms), itertools.repeat(-1)),
            np.int64,
            int(counts.sum()),
        )
        text_of = np.repeat(np.arange(len(terms), dtype=np.int64), counts)
        keys = text_of[found >= 0] * self.input_dim + found[found >= 0]  # (text, column), sortable as one number
        keys.sort()
        first = np.ones(len(keys), dtype=bool)
        np.not_equal(keys[1:], keys[:-1], out=first[1:])
        starts = np.flatnonzero(first)
        rows, ids = np.divmod(keys[starts], self.input_dim)
        tf = np.diff(np.append(starts, len(keys))).astype(np.float64)  # each term's count in its text
        if self.sublinear_tf:  # math.log, as row() computes it, once per distinct count
            tf = np.array([0.0] + [log(c) + 1.0 for c in range(1, int(tf.max(initial=0)) + 1)])[tf.astype(np.int64)]
        values = tf if self.idf is None else tf * self.idf[ids]
        if self.norm == "l2" and len(values):
            lengths = np.bincount(rows, minlength=len(terms))
            first_of = np.cumsum(lengths) - lengths
            squares, total = values * values, np.zeros(len(terms))
            active = np.flatnonzero(lengths)
            for k in range(int(lengths.max())):  # the k-th square of every text that has one: row()'s order
                active = active[lengths[active] > k]
                total[active] += squares[first_of[active] + k]
            values = values / np.sqrt(total)[rows]
        return rows, ids, values

    def row(self, text: str) -> tuple[list[int], list[float]]:
        """One text's term columns (ascending) and their float64 values."""
        ids = [j for j in map(self._column, self._terms(text)) if j is not None]
        ids.sort()
        if len(set(ids)) == len(ids):  # every term once (most short texts): term frequencies of 1
            values = [1.0] * len(ids) if self._idf is None else list(map(self._idf.__getitem__, ids))
        else:
            unique: list[int] = []
            tf: list[float] = []
            for j in ids:  # sorted: a term's repeats are adjacent
                if unique and j == unique[-1]:
                    tf[-1] += 1.0
                else:
                    unique.append(j)
                    tf.append(1.0)
            ids = unique
            if self.sublinear_tf:
                tf = [log(c) + 1.0 for c in tf]
            values = tf if self._idf is None else list(map(mul, tf, map(self._idf.__getitem__, ids)))
        if self.norm == "l2" and values:
            norm = sqrt(sum(map(mul, values, values)))  # summed in column order, as scikit-learn does
            values = list(map(norm.__rtruediv__, values))  # v / norm
        return ids, values

    def _terms(self, text: str) -> list[str]:
        if not isinstance(text, str):
            raise ValueError(f"Expected texts as str, got a {type(text).__name__}: {text!r:.60}.")
        tokens = self._tokens(text.lower() if self.lowercase else text)
        min_n, max_n = self.ngram_range
        if max_n == 1:
            return tokens
        # scikit-learn's word n-grams: the unigrams first (when min_n is 1), then each longer n in order.
        terms = list(tokens) if min_n == 1 else []
        for n in range(max(min_n, 2), min(max_n, len(tokens)) + 1):
            terms += [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
        return terms
