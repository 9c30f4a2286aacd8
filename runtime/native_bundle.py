"""A bundle run by the native core (``quantlight_native``, built from ``runtime/native`` by ``pip install``).

The engine writes ``model.qlm`` into a bundle beside its ONNX artifact (``quantization.ship.native_model``): the same
model in the artifact's own arithmetic, read by C. :func:`load_native` loads it when the extension is built; this
module imports neither numpy nor ONNX Runtime, so a native bundle costs the interpreter, the core and the model.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

MAGIC, FORMAT_VERSION = 0x4D4E4C51, 1  # "QLNM", the native model image's format (runtime/native/quantlight.h)
NATIVE_FILE = "model.qlm"
ENGINES = ("auto", "native", "onnxruntime")
ENGINE_ENV = "QUANTLIGHT_ENGINE"  # auto (default), native or onnxruntime: which engine load_bundle runs


def check_texts(inputs: Sequence) -> None:
    """Refuse an empty text (nothing but white space): it has no term to read, and a label from the model's bias
    alone would look like an answer. The CLI refuses it too (a bad row, listed with ``on_bad_row: skip``).

    >>> check_texts(["fine", " "])
    Traceback (most recent call last):
    ...
    ValueError: Text 1 is empty (nothing but white space): there is nothing to classify. Leave it out.
    """
    empty = next((i for i, text in enumerate(inputs) if isinstance(text, str) and not text.strip()), None)
    if empty is not None:
        raise ValueError(
            f"Text {empty} is empty (nothing but white space): there is nothing to classify. Leave it out."
        )


def native_core() -> Any:
    """The built extension, or ``None`` (no C compiler at install time, or the project was never installed)."""
    try:
        import quantlight_native
    except ImportError:
        return None
    return quantlight_native


class NativeBundle:
    """A bundle run by the native core: raw inputs in, labels or class probabilities out, as :class:`Bundle`.

    Texts are predicted one at a time, as the artifact computes a batch of one (dynamic int8 quantizes each
    text's activations alone).

    Args:
        folder: The bundle's folder.
        manifest: Its ``bundle.json``.
        model: The loaded ``quantlight_native.Model``.
        card: Its ``model_card.json``.
    """

    engine = "native"

    def __init__(self, folder: Path, manifest: Mapping[str, Any], model: Any, card: dict) -> None:
        self.folder = folder
        self.method: str = manifest["method"]
        self.classes: list[str] = list(manifest["classes"])
        self.input: str = manifest["input"]
        self.input_dim: int = model.input_dim
        self.model = model
        self.card = card
        self.engine_note = "native core (quantlight_native)"
        self.image_shape: tuple[int, ...] | None = None

    def labels(self, inputs: Sequence) -> list[int]:
        """The class index of each raw input: texts (a list of str), or ``(N, H, W)`` uint8 images."""
        if self.input == "text":
            check_texts(inputs)
            return self.model.predict_many(inputs)
        return self.model.images(self._pixels(inputs), False)

    def predict(self, inputs: Sequence) -> list[str]:
        """The predicted label of each raw input (the largest logit, the first of equal ones)."""
        classes = self.classes
        return [classes[i] for i in self.labels(inputs)]

    def logits(self, inputs: Sequence):
        """``(N, num_classes)`` float32 logits (imports numpy)."""
        import numpy as np

        if self.input == "text":
            check_texts(inputs)
        rows = self.model.logits(inputs) if self.input == "text" else self.model.images(self._pixels(inputs), True)
        return np.asarray(rows, dtype=np.float32).reshape(len(rows), len(self.classes))

    def predict_proba(self, inputs: Sequence):
        """``(N, num_classes)`` float32 class probabilities (the softmax of the logits; imports numpy)."""
        import numpy as np

        logits = self.logits(inputs)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def _pixels(self, images: Any) -> memoryview:
        shape = getattr(images, "shape", None)
        if getattr(images, "dtype", None) is None or str(images.dtype) != "uint8" or shape is None or len(shape) != 3:
            raise ValueError(f"Expected (N, H, W) uint8 images, got {type(images).__name__} of shape {shape}.")
        if shape[1] * shape[2] != self.input_dim:
            raise ValueError(f"Expected images of {self.input_dim} pixels, got {shape[1]}x{shape[2]}.")
        return memoryview(images.tobytes() if not images.flags["C_CONTIGUOUS"] else images).cast("B")


def load_native(
    folder: Path, manifest: Mapping[str, Any], data: bytes | None, card: dict, error: type[Exception]
) -> NativeBundle:
    """The bundle in ``folder`` on the native core, from its native model's bytes (``data``, already checked against
    the bundle's manifest; ``None``: the bundle holds none).

    Raises:
        error: The extension is not built, the bundle holds no native model, or its model file is corrupted or
            not the artifact's (one line naming the fix).
    """
    core = native_core()
    if core is None:
        raise error(
            "The native core is not built (quantlight_native): install the project with a C compiler "
            f"(`make`, or `pip install .`), or load with engine='onnxruntime' ({ENGINE_ENV}=onnxruntime)."
        )
    if data is None:
        why = card.get("native", {}).get("unsupported", "it was written before native models existed")
        raise error(f"Bundle {folder} holds no native model ({NATIVE_FILE}): {why}. Load it with engine='onnxruntime'.")
    try:
        model = core.load(data)
    except core.Error as err:
        raise error(f"Bundle {folder}: {NATIVE_FILE} is {err}. Copy the whole folder again, or write it again.") from (
            err
        )
    if data[28:60].hex() != manifest.get("sha256"):  # the header's record of the artifact it was written from
        raise error(
            f"Bundle {folder}: {NATIVE_FILE} was written from another artifact than {manifest['artifact']}. "
            "Write the bundle again."
        )
    return NativeBundle(folder, manifest, model, card)


def card_of(folder: Path, name: str) -> dict:
    """The bundle's model card as a dict (empty when absent or unreadable: the card is documentation)."""
    try:
        card = json.loads((folder / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return card if isinstance(card, dict) else {}
