"""The native model image: what ``runtime/native`` (C) reads to run a bundle's model without ONNX Runtime.

The image is a versioned little-endian file: a header, the labels, the featurizer (vocabulary with its hash table,
idf and settings; or the image normalization), then one record per layer (:class:`Step`) with the artifact's own
constants (fp32 weights, int8 codes with their scales and zero points, packed 4-bit rows). A checksum ends the file;
the C loader checks every field against its length. ``quantization.ship.native_graph`` reads the layers off an artifact.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from runtime.features import TOKEN_PATTERN
from runtime.native_bundle import FORMAT_VERSION, MAGIC

PATTERNS = {TOKEN_PATTERN: 1, r"(?u)\b\w+\b|[^\w\s]": 2}  # the token patterns the C featurizer knows
OPS = {"bag_f32": 1, "bag_i4": 2, "bag_i8": 3, "quantize": 4, "qgemm": 5, "dequantize": 6, "dynq": 7, "gemm": 8}
OPS |= {"relu": 9, "nbits": 10}
BIAS, BIAS_I32, SIGNED, PER_CHANNEL, ZERO_POINTS, STATIC, INT8_COMPUTE = 1, 2, 4, 8, 16, 32, 64


class NativeUnsupported(ValueError):
    """The artifact or preprocessing holds something the native core does not compute."""


@dataclass
class Step:
    """One layer record: its kind, sizes, flags, scalars and arrays (written in order, each 4-byte aligned)."""

    op: str
    in_dim: int
    out_dim: int
    flags: int = 0
    a: int = 0
    b: int = 0
    in_scale: float = 0.0
    in_zero: int = 0
    out_scale: float = 0.0
    out_zero: int = 0
    arrays: list[np.ndarray] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        head = struct.pack("<6I", OPS[self.op], self.in_dim, self.out_dim, self.flags, self.a, self.b)
        head += struct.pack("<fIfI", self.in_scale, self.in_zero, self.out_scale, self.out_zero)
        return head + b"".join(_aligned(np.ascontiguousarray(a).tobytes()) for a in self.arrays)


def _aligned(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def checksum(body: bytes) -> int:
    """The image's checksum (``checksum`` in ``quantlight.c``): Fletcher's two wrapping sums over the 32-bit words,
    ``a ^ rotl(b, 16)``, where ``b`` sums each word times its distance from the end.

    >>> hex(checksum(bytes([1, 0, 0, 0, 2, 0, 0, 0])))  # a = 3, b = 1 + 3 = 4
    '0x40003'
    """
    words = np.frombuffer(body, dtype="<u4").astype(np.uint64)
    a = int(words.sum()) & 0xFFFFFFFF
    b = int((words * np.arange(len(words), 0, -1, dtype=np.uint64)).sum()) & 0xFFFFFFFF
    return a ^ (((b << 16) | (b >> 16)) & 0xFFFFFFFF)


def fnv1a(data: bytes) -> int:
    """The C lookup's hash: FNV-1a, 32 bits.

    >>> hex(fnv1a(b"a"))
    '0xe40c292c'
    """
    h = 2166136261
    for byte in data:
        h = ((h ^ byte) * 16777619) & 0xFFFFFFFF
    return h


def term_table(terms: Sequence[bytes]) -> np.ndarray:
    """Open addressing (linear probing) of the terms by :func:`fnv1a`: ``index + 1`` per slot, 0 empty; at least
    twice as many slots as terms, a power of two."""
    size = 1 << max(1, (2 * len(terms) - 1).bit_length())
    table = np.zeros(size, np.uint32)
    for index, term in enumerate(terms):
        slot = fnv1a(term) & (size - 1)
        while table[slot]:
            slot = (slot + 1) & (size - 1)
        table[slot] = index + 1
    return table


def _strings(items: Sequence[bytes]) -> bytes:
    ends = np.cumsum([len(item) for item in items], dtype=np.uint32)
    return _aligned(ends.tobytes()) + _aligned(b"".join(items))


def _text_section(vectorizer: Mapping[str, Any]) -> bytes:
    pattern = vectorizer.get("token_pattern", TOKEN_PATTERN)
    if pattern not in PATTERNS:
        raise NativeUnsupported(f"the token pattern {pattern!r} (the native featurizer knows {', '.join(PATTERNS)})")
    if tuple(vectorizer.get("ngram_range", (1, 1))) != (1, 1):
        raise NativeUnsupported(f"word n-grams {tuple(vectorizer['ngram_range'])} (the native featurizer reads words)")
    vocabulary = vectorizer["vocabulary"]
    terms = sorted(vocabulary, key=vocabulary.__getitem__) if isinstance(vocabulary, Mapping) else list(vocabulary)
    encoded = [term.encode("utf-8", "surrogatepass") for term in terms]
    tfidf = vectorizer["kind"] == "tfidf"
    norm = vectorizer.get("norm", "l2") if tfidf else None
    table = term_table(encoded)
    settings = [bool(vectorizer["lowercase"]), PATTERNS[pattern], tfidf, bool(vectorizer.get("sublinear_tf"))]
    out = struct.pack("<6I", *settings, norm == "l2", len(table))
    if tfidf:
        out += np.asarray(vectorizer["idf"], dtype="<f8").tobytes()
    return out + _strings(encoded) + table.tobytes()


def _image_section(preprocessing: Mapping[str, Any]) -> bytes:
    p = preprocessing
    return struct.pack("<3f", float(p.get("scale", 255)), float(p["mean"]), float(p["std"]))


def model_image(
    steps: Sequence[Step], preprocessing: Mapping[str, Any], classes: Sequence[str], sha256: str = "00" * 32
) -> bytes:
    """The model image of ``steps`` after the featurizer ``preprocessing`` describes (the file's layout is
    ``ql_load``'s in ``runtime/native/quantlight.c``)."""
    kind = preprocessing.get("input")
    if kind == "text":
        featurizer = _text_section(preprocessing["vectorizer"])
        input_dim = steps[0].in_dim
    elif kind == "image":
        featurizer = _image_section(preprocessing)
        input_dim = int(np.prod(preprocessing["image_shape"]))
    else:
        raise NativeUnsupported(f"input {kind!r}")
    labels = [str(name).encode("utf-8") for name in classes]
    header = struct.pack("<4I", MAGIC, FORMAT_VERSION, 0, 0 if kind == "text" else 1)
    header += struct.pack("<3I", input_dim, len(labels), len(steps)) + bytes.fromhex(sha256)
    body = header + _strings(labels) + featurizer + b"".join(step.to_bytes() for step in steps)
    body = body[:8] + struct.pack("<I", len(body) + 4) + body[12:]
    return body + struct.pack("<I", checksum(body))
