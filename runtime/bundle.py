"""Load a deployable bundle and predict from raw inputs with numpy and ONNX Runtime alone.

A bundle folder holds ``bundle.json`` (format, version, method, artifact name and SHA-256, classes, input
kind and width), the artifact, ``preprocessing.json`` (plain data) and a model card. Quantlight's engine
writes bundles (``quantization.bundle.write_bundle``); this module only reads them, and never imports
torch, Lightning or scikit-learn: loading one costs what numpy and ONNX Runtime cost.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .native_bundle import ENGINE_ENV, ENGINES, NativeBundle, card_of, load_native

if TYPE_CHECKING:  # numpy and ONNX Runtime load with the first bundle that runs on them, never with the native core
    import numpy as np

    from .features import Bag, TextFeaturizer
    from .images import ImageFeaturizer

# Version 1: dense-input artifacts only; 2: term-bag artifacts; 3: compact preprocessing.json (a text vocabulary as
# its terms in column order).
FORMAT, VERSION, VERSIONS = "quantlight-bundle", 3, (1, 2, 3)
MANIFEST, PREPROCESSING, CARD_JSON, CARD_MD = "bundle.json", "preprocessing.json", "model_card.json", "model_card.md"
_CHUNK_ROWS = 1024  # inputs featurized and run at a time: bounds the (rows, width) blocks


class BundleError(Exception):
    """A bundle folder is missing, incomplete, tampered with, of another version, or needs torch."""


def featurizer(preprocessing: Mapping[str, Any]) -> TextFeaturizer | ImageFeaturizer:
    """The featurizer a datamodule's ``preprocessing()`` (plain data, e.g. a bundle's JSON) describes.

    >>> featurizer({"input": "image", "image_shape": [28, 28], "mean": 0.1307, "std": 0.3081}).input_dim
    784
    """
    from .features import TextFeaturizer
    from .images import ImageFeaturizer

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


class Bundle:
    """A loaded bundle: raw inputs in, labels or class probabilities out (see :func:`load_bundle`).

    ONNX Runtime's dynamic int8 quantizes activations per call, so with ``onnx_dynamic_int8`` a label can
    depend on the other inputs of the call (2 of 4,628 test tweets differ between batch 1 and batch 256).

    Args:
        folder: The bundle's folder.
        manifest: Its ``bundle.json``.
        featurize: Raw inputs -> features (a :class:`Bag` of term ids and weights, or dense rows).
        model: The loaded artifact: anything with ``sparse_input`` and ``logits(features) -> (N, C)``.
        card: Its ``model_card.json``.
        engine: What runs the model: ``onnxruntime``, or ``torch`` for a torch artifact (the engine's loader).
    """

    def __init__(
        self,
        folder: Path,
        manifest: dict,
        featurize: TextFeaturizer | ImageFeaturizer,
        model: Any,
        card: dict,
        engine: str = "onnxruntime",
    ) -> None:
        self.engine = engine
        self.engine_note = ""
        self.folder = folder
        self.method: str = manifest["method"]
        self.classes: list[str] = list(manifest["classes"])
        self.input: str = manifest["input"]
        self.input_dim: int = featurize.input_dim
        self.featurize = featurize
        self.model = model
        self.card = card
        self.sparse_input: bool = bool(getattr(model, "sparse_input", False))

    def features(self, inputs: Sequence) -> np.ndarray | Bag:
        """What the model reads from raw inputs (texts, or ``(N, H, W)`` uint8 images): the texts' term ids and
        weights for a sparse-input model, else ``(N, input_dim)`` float32 rows."""
        if self.sparse_input:
            return self.featurize.bag(inputs)
        return self.featurize(inputs)

    def run(self, features: np.ndarray | Bag) -> np.ndarray:
        """``(N, num_classes)`` float32 logits of :meth:`features`, as the quantization report measured the artifact."""
        import numpy as np

        return np.asarray(self.model.logits(features))

    def logits(self, inputs: Sequence) -> np.ndarray:
        """``(N, num_classes)`` float32 logits of raw inputs, :data:`_CHUNK_ROWS` at a time."""
        import numpy as np

        if len(inputs) <= _CHUNK_ROWS:
            return self.run(self.features(inputs))
        return np.concatenate(
            [self.run(self.features(inputs[i : i + _CHUNK_ROWS])) for i in range(0, len(inputs), _CHUNK_ROWS)]
        )

    def predict_proba(self, inputs: Sequence) -> np.ndarray:
        """``(N, num_classes)`` float32 class probabilities (the softmax of the logits)."""
        import numpy as np

        logits = self.logits(inputs)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def predict(self, inputs: Sequence) -> list[str]:
        """The predicted label of each raw input (the largest logit)."""
        classes = self.classes
        return [classes[i] for i in self.logits(inputs).argmax(axis=1).tolist()]


def load_bundle(path: str | os.PathLike, num_threads: int = 1, engine: str | None = None) -> Bundle | NativeBundle:
    """Load a bundle, checking every file first; it runs on the native core when that is built and the bundle holds
    a native model (``bundle.engine == "native"``), else its ONNX artifact runs in ONNX Runtime.

    Args:
        path: The bundle folder (or its ``bundle.json``).
        num_threads: ONNX Runtime intra-op threads (the native core runs one thread per call).
        engine: ``auto`` (the default: native when possible), ``native`` (refused where it is not possible) or
            ``onnxruntime``; ``None`` reads the ``QUANTLIGHT_ENGINE`` environment variable (default ``auto``).

    Raises:
        BundleError: The folder or one of its files is missing, corrupted or of another bundle version, or
            the artifact is a torch file (it needs torch: one line says how to load it or get a torch-free one).
    """
    engine = engine or os.environ.get(ENGINE_ENV) or "auto"
    if engine not in ENGINES:
        raise BundleError(f"Expected `engine` ({ENGINE_ENV}) to be one of ({', '.join(ENGINES)}), got {engine!r}.")
    folder, manifest = read_manifest(path)
    name = manifest["artifact"]
    if engine != "onnxruntime" and Path(name).suffix == ".onnx":
        try:
            return load_native(folder, manifest, card_of(folder, CARD_JSON), BundleError)
        except BundleError as err:
            if engine == "native":
                raise
            note = str(err)
    else:
        note = "engine onnxruntime asked for" if engine == "onnxruntime" else ""
    if Path(name).suffix != ".onnx":
        raise BundleError(
            f"Bundle {folder} holds a torch artifact ({name}, method {manifest['method']}), which needs torch to "
            "load: use quantization.bundle.load_bundle where torch is installed, or write a torch-free bundle by "
            "quantizing again with an ONNX method, e.g. --trainer.callbacks.methods '[onnx_static_int8]'."
        )
    from .onnx_model import OnnxModel

    data = check_artifact(folder, manifest)
    try:
        featurize = featurizer(read_bundle_json(folder, PREPROCESSING))
        model = OnnxModel(data, num_threads)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:  # a hand-edited file
        raise BundleError(f"Bundle {folder} cannot be used: {err!r}. Write the bundle again.") from err
    card = read_bundle_json(folder, CARD_JSON) if (folder / CARD_JSON).is_file() else {}
    bundle = Bundle(folder, manifest, featurize, model, card)
    bundle.engine_note = note  # why the native core does not run it
    return bundle


def check_artifact(folder: Path, manifest: Mapping[str, Any]) -> bytes:
    """The artifact's bytes, once their SHA-256 matches the manifest's."""
    import hashlib  # here: the native core's loading never needs it

    name = manifest["artifact"]
    data = (folder / name).read_bytes()
    if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
        raise BundleError(
            f"Bundle {folder}: {name} does not match the SHA-256 in {MANIFEST} (truncated or replaced). "
            "Copy the whole folder again, or write the bundle again."
        )
    return data


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    """The bundle's folder and its ``bundle.json``, checked (format, version, artifact present) without
    loading the model: what a caller needs to know before loading it (classes, input kind and width).

    Raises:
        BundleError: As :func:`load_bundle`.
    """
    folder = Path(path)
    if folder.is_file() and folder.name == MANIFEST:
        folder = folder.parent
    if not folder.is_dir():
        what = "is a file, not a bundle folder" if folder.exists() else "not found"
        raise BundleError(
            f"Bundle {folder} {what}. Pass the folder write_bundle wrote (it holds {MANIFEST}), "
            "e.g. <run>/quantization/bundle."
        )
    if not (folder / MANIFEST).is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:5]) or "nothing"
        raise BundleError(
            f"Bundle {folder} holds no {MANIFEST} (found: {found}): not a bundle. "
            "Write one with quantization.bundle.write_bundle, or pass the folder it wrote."
        )
    manifest = read_bundle_json(folder, MANIFEST)
    if manifest.get("format") != FORMAT or manifest.get("version") not in VERSIONS:
        raise BundleError(
            f"Bundle {folder} is {manifest.get('format')!r} version {manifest.get('version')!r}; this Quantlight "
            f"reads {FORMAT!r} version {', '.join(map(str, VERSIONS[:-1]))} or {VERSIONS[-1]}. Write the bundle again "
            "with this version."
        )
    missing = [key for key in ("method", "artifact", "sha256", "classes", "input", "input_dim") if key not in manifest]
    if missing:
        raise BundleError(f"Bundle {folder}: {MANIFEST} lacks {', '.join(missing)}. Write the bundle again.")
    name = str(manifest["artifact"])
    if Path(name).name != name or not (folder / name).is_file():
        raise BundleError(f"Bundle {folder} lacks its artifact {name}. Copy the whole folder, or write it again.")
    return folder, manifest


def read_bundle_json(folder: Path, name: str) -> dict:
    """One of the bundle's JSON files as a dict, or one line saying what is wrong with it."""
    if not (folder / name).is_file():
        raise BundleError(f"Bundle {folder} lacks {name}. Copy the whole folder, or write the bundle again.")
    try:
        data = json.loads((folder / name).read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(
            f"Bundle {folder}: {name} is not valid JSON ({err}). Copy the whole folder again, or write it again."
        ) from err
    if not isinstance(data, dict):
        raise BundleError(f"Bundle {folder}: {name} holds no JSON object. Write the bundle again.")
    return data
