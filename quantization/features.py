"""Raw inputs to model features from plain data: what a shipped model needs besides its weights.

A text featurizer rebuilt from a fitted vectorizer's plain state gives scikit-learn's TF-IDF (or
count) vectors without scikit-learn, a small fraction of its per-call cost; an image featurizer
applies the MNIST datamodule's normalization to raw uint8 pixels. Both return the dense float32
``(B, input_dim)`` rows the quantized runners take. No Lightning, no scikit-learn, no pickles.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

# scikit-learn's TfidfVectorizer/CountVectorizer defaults, which the text datamodule's vectorizers keep.
TOKEN_PATTERN = r"(?u)\b\w\w+\b"
NORMS = ("l2", None)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_IDX_UINT8 = 0x08  # IDX type byte of unsigned bytes: the third byte of the magic number


class TextFeaturizer:
    """Raw texts to the vectors scikit-learn's fitted ``TfidfVectorizer`` (or ``CountVectorizer``) gives.

    The same steps as scikit-learn's ``transform`` (``str.lower``, the token regex, word n-grams joined
    by a space, counts of in-vocabulary terms, ``1 + log(tf)`` when sublinear, times idf, rows divided
    by their L2 norm), as the same float64 operations in the same order, then rounded once to float32 as
    the datamodule's batches are. Per text, only its tokens are looked up; the numerics run once per
    batch, over the non-zeros.

    Args:
        vocabulary: Term -> column index (the fitted ``vocabulary_``).
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
    """

    def __init__(
        self,
        vocabulary: Mapping[str, int],
        idf: Sequence[float] | np.ndarray | None,
        ngram_range: tuple[int, int] = (1, 1),
        lowercase: bool = True,
        sublinear_tf: bool = False,
        norm: str | None = "l2",
        token_pattern: str = TOKEN_PATTERN,
    ) -> None:
        self.vocabulary = {str(term): int(index) for term, index in vocabulary.items()}
        self.input_dim = len(self.vocabulary)
        if sorted(self.vocabulary.values()) != list(range(self.input_dim)):
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
        self._tokens = re.compile(token_pattern).findall

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> TextFeaturizer:
        """From :func:`datamodules.text_vectorizer.vectorizer_state` (``idf`` a tensor, array or list), or
        the ``vectorizer`` of a text datamodule's ``preprocessing()``; absent ``norm`` and
        ``token_pattern`` are scikit-learn's defaults, which the datamodule's vectorizers keep."""
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
            None if idf is None else np.asarray(idf, dtype=np.float64),  # a torch tensor converts too
            tuple(state["ngram_range"]),
            bool(state["lowercase"]),
            bool(state.get("sublinear_tf", False)),
            state.get("norm", "l2") if tfidf else None,
            state.get("token_pattern", TOKEN_PATTERN),
        )

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """``(B, input_dim)`` float32 vectors of ``B`` texts (a text with no known term gives a zero row)."""
        if isinstance(texts, str):
            raise ValueError("Expected a list of texts, got one str: wrap it in a list.")
        get = self.vocabulary.get
        columns: list[int] = []
        counts: list[int] = []
        lengths: list[int] = []
        for text in texts:
            found: dict[int, int] = {}  # column -> count, for this text
            for column in map(get, self._terms(text)):
                if column is not None:
                    found[column] = found.get(column, 0) + 1
            ordered = sorted(found)  # scikit-learn's column order: a row's norm sums its squares in this order
            columns += ordered
            counts += map(found.__getitem__, ordered)
            lengths.append(len(ordered))
        rows = np.repeat(np.arange(len(lengths)), lengths)  # (nnz,) row of each non-zero
        cols = np.asarray(columns, dtype=np.intp)  # (nnz,)
        values = np.asarray(counts, dtype=np.float64)  # (nnz,) term counts
        if self.sublinear_tf:
            values = np.log(values) + 1.0
        if self.idf is not None:
            values *= self.idf[cols]
        if self.norm == "l2":
            norms = np.sqrt(np.bincount(rows, values * values, minlength=len(lengths)))  # (B,)
            values /= norms[rows]  # a row with a non-zero has a positive norm
        out = np.zeros((len(lengths), self.input_dim), dtype=np.float32)
        out[rows, cols] = values  # rounded once to float32
        return out

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


class ImageFeaturizer:
    """Raw uint8 images to the MNIST datamodule's features: ``(pixels / scale - mean) / std``, flattened.

    The 256 possible pixel values are computed once, in float32 and in the datamodule's order of
    operations, so a lookup gives exactly its features.

    Args:
        image_shape: ``(height, width)`` of every image.
        mean: Mean subtracted after scaling.
        std: Standard deviation divided by after subtracting the mean.
        scale: Pixels are divided by it first (255: to [0, 1]).

    Example:
        >>> featurize = ImageFeaturizer((1, 2), mean=0.5, std=0.5)
        >>> featurize(np.array([[[0, 255]]], dtype=np.uint8)).tolist()
        [[-1.0, 1.0]]
    """

    def __init__(self, image_shape: tuple[int, int], mean: float, std: float, scale: float = 255.0) -> None:
        if len(image_shape) != 2 or min(image_shape) < 1:
            raise ValueError(f"Expected `image_shape` (height, width) >= 1, got {image_shape}.")
        if not std > 0 or not scale > 0:
            raise ValueError(f"Expected `std` and `scale` > 0, got {std} and {scale}.")
        self.image_shape = (int(image_shape[0]), int(image_shape[1]))
        self.input_dim = math.prod(self.image_shape)
        pixels = np.arange(256, dtype=np.float32)
        self.table = (pixels / np.float32(scale) - np.float32(mean)) / np.float32(std)  # (256,) float32

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """``(B, height, width)`` uint8 images to ``(B, height * width)`` float32 features."""
        images = np.asarray(images)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != self.image_shape:
            raise ValueError(
                f"Expected raw uint8 images of shape (B, {self.image_shape[0]}, {self.image_shape[1]}), got "
                f"{images.dtype} {images.shape}. Pass unnormalized pixels, a batch even for one image."
            )
        return self.table[images.reshape(len(images), -1)]  # (B, H, W) -> (B, H * W)


def featurizer(preprocessing: Mapping[str, Any]) -> TextFeaturizer | ImageFeaturizer:
    """The featurizer a datamodule's ``preprocessing()`` (plain data, e.g. a bundle's JSON) describes.

    >>> featurizer({"input": "image", "image_shape": [28, 28], "mean": 0.1307, "std": 0.3081}).input_dim
    784
    """
    kind = preprocessing.get("input")
    if kind == "text":
        return TextFeaturizer.from_state(preprocessing.get("vectorizer") or {})
    if kind == "image":
        missing = [key for key in ("image_shape", "mean", "std") if key not in preprocessing]
        if missing:
            raise ValueError(f"The image preprocessing lacks {', '.join(missing)}.")
        p = preprocessing
        return ImageFeaturizer(tuple(p["image_shape"]), float(p["mean"]), float(p["std"]), float(p.get("scale", 255)))
    raise ValueError(f"Expected preprocessing `input` to be one of (text, image), got {kind!r}.")


def read_idx_images(path: str | os.PathLike) -> np.ndarray:
    """The ``(N, height, width)`` uint8 images of an uncompressed IDX file (MNIST's ``*-images-idx3-ubyte``).

    Raises:
        ValueError: The file is not a 3-dimensional uint8 IDX file, or is truncated or padded.
    """
    path = Path(path)
    data = path.read_bytes()
    magic = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if magic != (_IDX_UINT8 << 8 | 3):
        found = "a gzip archive (gunzip it)" if data[:2] == b"\x1f\x8b" else f"magic number {magic}"
        raise ValueError(
            f"{path} is not an IDX image file: {found}, expected 2051 (uint8 images, 3 dimensions). "
            "Pass an uncompressed *-images-idx3-ubyte file."
        )
    n, height, width = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    if len(data) != 16 + n * height * width:
        raise ValueError(
            f"{path} is truncated or padded: {len(data)} bytes, expected {16 + n * height * width} for {n} images "
            f"of {height}x{width}. Write it again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(n, height, width)


def read_image_files(paths: Sequence[str | os.PathLike]) -> np.ndarray:
    """Image files (PNG, JPEG, ...) as ``(N, height, width)`` uint8 grayscale; all must share one size."""
    from PIL import Image  # torchvision's dependency; only image files need it

    images = []
    for path in paths:
        with Image.open(path) as image:
            images.append(np.asarray(image.convert("L"), dtype=np.uint8))  # (H, W)
        if images[-1].shape != images[0].shape:
            raise ValueError(
                f"{path} is {images[-1].shape[1]}x{images[-1].shape[0]} pixels, {paths[0]} is "
                f"{images[0].shape[1]}x{images[0].shape[0]}: resize them to the model's image size first."
            )
    return np.stack(images)


def read_images(path: str | os.PathLike) -> tuple[np.ndarray, list[str] | None]:
    """Raw images and their names from an IDX file, one image file, or a folder of image files (by name).

    Returns:
        ``(N, height, width)`` uint8 images, and the file name of each (``None`` for an IDX file: its rows).
    """
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise ValueError(f"{path} holds no image file ({', '.join(IMAGE_SUFFIXES)}).")
        return read_image_files(files), [p.name for p in files]
    if not path.is_file():
        raise ValueError(f"{path} not found: pass an IDX image file, an image file or a folder of them.")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image_files([path]), [path.name]
    return read_idx_images(path), None
