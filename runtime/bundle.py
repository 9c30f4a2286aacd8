"""Load a deployable bundle and predict from raw inputs with numpy and ONNX Runtime alone.

A bundle folder holds ``bundle.json`` (format, version, method, artifact name, classes, input kind and width,
and every other file with its SHA-256), the artifact, ``preprocessing.json`` (plain data) and a model card.
Quantlight's engine writes bundles (``quantization.ship.bundle.write_bundle``); this module only reads them, and
never imports torch, Lightning or scikit-learn: loading one costs what numpy and ONNX Runtime cost.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .native_bundle import ENGINE_ENV, ENGINES, NATIVE_FILE, NativeBundle, check_texts, load_native

if TYPE_CHECKING:  # numpy and ONNX Runtime load with the first bundle that runs on them, never with the native core
    import numpy as np

    from .features import Bag, TextFeaturizer
    from .images import ImageFeaturizer

# Version 1: dense-input artifacts only; 2: term-bag artifacts; 3: compact preprocessing.json (a text vocabulary as
# its terms in column order); 4: `files`, every file of the folder with its SHA-256 (the folder is written aside and
# renamed into place, docs/safety.md).
FORMAT, VERSION, VERSIONS = "quantlight-bundle", 4, (1, 2, 3, 4)
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
        self.engine_note = ""  # why the native core does not run it, when it could have
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
        """``(N, num_classes)`` float32 logits of raw inputs, :data:`_CHUNK_ROWS` at a time.

        Raises:
            ValueError: A text is empty (nothing but white space): it has no term to read, and a label from the
                model's bias alone would look like an answer. The CLI refuses it too (a bad row, listed with
                ``on_bad_row: skip``).
        """
        import numpy as np

        if self.input == "text":
            check_texts(inputs)
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
    """Load a bundle, checking the files it runs on first: on the native core when that is built and the bundle
    holds a native model (``bundle.engine == "native"``), else its ONNX artifact in ONNX Runtime.

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
    return _retrying(lambda p: _load(p, num_threads, engine), path)  # one consistent bundle, its files checked


def _load(path: str | os.PathLike, num_threads: int, engine: str) -> Bundle | NativeBundle:
    folder, manifest = _read_manifest(path)
    note = "engine onnxruntime asked for" if engine == "onnxruntime" else ""
    if engine != "onnxruntime" and Path(manifest["artifact"]).suffix == ".onnx":
        try:
            _, _, files = _read_files(path, (NATIVE_FILE, CARD_JSON), manifest)
            card = bundle_json(folder, CARD_JSON, files) if CARD_JSON in files else {}
            return load_native(folder, manifest, files.get(NATIVE_FILE), card, BundleError)
        except BundleError as err:
            if engine == "native" or _rewriting(folder):
                raise
            note = str(err)
    files = _read_files(path, (manifest["artifact"], PREPROCESSING, CARD_JSON), manifest)
    bundle = bundle_from_files(*files, num_threads)
    bundle.engine_note = note
    return bundle


def bundle_from_files(folder: Path, manifest: dict, files: Mapping[str, bytes], num_threads: int = 1) -> Bundle:
    """The :class:`Bundle` of :func:`read_bundle_files`' checked bytes (ONNX); raises as :func:`load_bundle`."""
    name = manifest["artifact"]
    if Path(name).suffix != ".onnx":
        raise BundleError(
            f"Bundle {folder} holds a torch artifact ({name}, method {manifest['method']}), which needs torch to "
            "load: use quantization.ship.bundle.load_bundle where torch is installed, or write a torch-free bundle by "
            "quantizing again with an ONNX method, e.g. --trainer.callbacks.methods '[onnx_static_int8]'."
        )
    from .onnx_model import OnnxModel

    try:
        featurize = featurizer(bundle_json(folder, PREPROCESSING, files))
        model = OnnxModel(files[manifest["artifact"]], num_threads)
    except (ValueError, TypeError, KeyError, AttributeError, RuntimeError) as err:  # a hand-edited file
        raise BundleError(f"Bundle {folder} cannot be used: {err!r}. Write the bundle again.") from err
    check_shapes(folder, manifest, featurize, model)
    card = bundle_json(folder, CARD_JSON, files) if CARD_JSON in files else {}
    return Bundle(folder, manifest, featurize, model, card)


def check_artifact(folder: Path, manifest: Mapping[str, Any]) -> bytes:
    """The artifact's bytes, once their SHA-256 matches the manifest's."""
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
    return _retrying(_read_manifest, path)


def _read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    folder = _folder(path)
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
            "Write one with quantization.ship.bundle.write_bundle, or pass the folder it wrote."
        )
    manifest = read_bundle_json(folder, MANIFEST)
    if manifest.get("format") != FORMAT or manifest.get("version") not in VERSIONS:
        raise BundleError(
            f"Bundle {folder} is {manifest.get('format')!r} version {manifest.get('version')!r}; this Quantlight "
            f"reads {FORMAT!r} version {', '.join(map(str, VERSIONS[:-1]))} or {VERSIONS[-1]}. Write the bundle again "
            "with this version."
        )
    required = ["method", "artifact", "sha256", "classes", "input", "input_dim"]
    required += ["files"] if manifest["version"] >= 4 else []  # every file with its SHA-256
    missing = [key for key in required if key not in manifest]
    if missing:
        raise BundleError(f"Bundle {folder}: {MANIFEST} lacks {', '.join(missing)}. Write the bundle again.")
    name = str(manifest["artifact"])
    if Path(name).name != name or not (folder / name).is_file():
        raise BundleError(f"Bundle {folder} lacks its artifact {name}. Copy the whole folder, or write it again.")
    return folder, manifest


def read_bundle_json(folder: Path, name: str) -> dict:
    """One of the bundle's JSON files as a dict, or one line saying what is wrong with it."""
    file = folder / name
    return bundle_json(folder, name, {name: file.read_bytes()} if file.is_file() else {})


# --- one consistent bundle: every file checked against bundle.json, read while the folder may be rewritten ---------

# The siblings storage.atomic.atomic_folder writes a new bundle into and moves the old one to while it swaps them:
# while one exists, a failed read is retried (see docs/safety.md).
REWRITE_MARKS = (".tmp-", ".old-")
_ATTEMPTS, _PAUSE_S = 50, 0.01


def read_bundle_files(path: str | os.PathLike) -> tuple[Path, dict, dict[str, bytes]]:
    """The bundle's folder, its ``bundle.json``, and the bytes of every file it lists, each checked against its
    SHA-256 (version 4; older bundles: the artifact's, and ``preprocessing.json`` and the model card unchecked).

    All of one bundle: a rewrite (``write_bundle``) swaps whole folders, and a read that meets one is retried.

    Raises:
        BundleError: As :func:`load_bundle`.
    """
    return _retrying(_read_files, path)


def bundle_json(folder: Path, name: str, files: Mapping[str, bytes]) -> dict:
    """One JSON file of :func:`read_bundle_files`' ``files`` as a dict, or one line saying what is wrong with it."""
    if name not in files:
        raise BundleError(f"Bundle {folder} lacks {name}. Copy the whole folder, or write the bundle again.")
    try:
        data = json.loads(files[name].decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise BundleError(
            f"Bundle {folder}: {name} is not valid JSON ({err}). Copy the whole folder again, or write it again."
        ) from err
    if not isinstance(data, dict):
        raise BundleError(f"Bundle {folder}: {name} holds no JSON object. Write the bundle again.")
    return data


def check_shapes(folder: Path, manifest: Mapping[str, Any], featurize: Any, model: Any) -> None:
    """Refuse a bundle whose parts do not fit together: the preprocessing's width (a text vocabulary's size, an
    image's pixels) against ``input_dim``, the artifact's input (its declared width; for term ids, the last
    term's row) and its logits against the classes."""
    dim, classes = int(manifest["input_dim"]), list(manifest["classes"])
    if featurize.input_dim != dim:
        kind = f"a {featurize.input_dim}-term vocabulary" if manifest["input"] == "text" else "its pixels"
        raise BundleError(
            f"Bundle {folder}: {PREPROCESSING} gives {featurize.input_dim} features per example ({kind}), but "
            f"{MANIFEST} says input_dim {dim}: its files come from different bundles. Write the bundle again."
        )
    declared = getattr(model, "input_dim", None)
    if declared is not None and declared != dim:
        raise BundleError(
            f"Bundle {folder}: the artifact reads {declared} features per example, the preprocessing gives {dim}: "
            "its files come from different bundles. Write the bundle again."
        )
    import numpy as np

    try:
        logits = np.asarray(_probe(model, dim))  # (1, num_classes)
    except Exception as err:  # ONNX Runtime's own types: a term id past the artifact's table, a wrong width
        raise BundleError(
            f"Bundle {folder}: the artifact does not take the preprocessing's {dim} features per example "
            f"({str(err).splitlines()[0][:160]}): its files come from different bundles. Write the bundle again."
        ) from err
    if logits.shape != (1, len(classes)):
        raise BundleError(
            f"Bundle {folder}: the artifact gives {logits.shape[-1]} logits per example, {MANIFEST} names "
            f"{len(classes)} classes. Write the bundle again."
        )


def _probe(model: Any, dim: int) -> np.ndarray:
    """The model's logits for one example that reads the last input column (a term-id artifact looks up its
    last row: ONNX Runtime's Gather refuses an id past its table)."""
    import numpy as np

    from .features import Bag
    from .onnx_model import OnnxModel, quiet_run_options

    if getattr(model, "sparse_input", False):
        features = Bag(np.array([[dim - 1]], dtype=np.int64), np.ones((1, 1), dtype=np.float32), None)
    else:
        features = np.zeros((1, dim), dtype=np.float32)
    if isinstance(model, OnnxModel):  # quietly: ONNX Runtime logs a refused run to stderr
        return model.session.run(None, model.feeds(features), quiet_run_options())[0]
    return model.logits(features)


def _read_files(
    path: str | os.PathLike, names: Sequence[str] | None = None, manifest: dict | None = None
) -> tuple[Path, dict, dict[str, bytes]]:
    """The bundle's files (``names``: those of them it lists; ``None``: all), each checked against its SHA-256."""
    folder, manifest = (_folder(path), manifest) if manifest is not None else _read_manifest(path)
    if manifest["version"] < 4:
        files = {manifest["artifact"]: check_artifact(folder, manifest)}
        for name in (PREPROCESSING, CARD_JSON):
            if (folder / name).is_file():
                files[name] = (folder / name).read_bytes()
        return folder, manifest, files
    listed = manifest["files"]
    if not isinstance(listed, dict) or manifest["artifact"] not in listed:
        raise BundleError(f"Bundle {folder}: {MANIFEST} does not list its artifact in `files`. Write the bundle again.")
    files = {}
    for name, digest in listed.items():
        if names is not None and name not in names:
            continue  # e.g. the device build's sources: not what a loaded bundle runs on
        file = folder / name
        if Path(name).is_absolute() or ".." in Path(name).parts or not file.is_file():
            raise BundleError(f"Bundle {folder} lacks {name}. Copy the whole folder, or write the bundle again.")
        files[name] = file.read_bytes()
        if hashlib.sha256(files[name]).hexdigest() != digest:
            raise BundleError(
                f"Bundle {folder}: {name} does not match the SHA-256 in {MANIFEST} (truncated or replaced). "
                "Copy the whole folder again, or write the bundle again."
            )
    return folder, manifest, files


def _folder(path: str | os.PathLike) -> Path:
    path = Path(path)
    return path.parent if path.name == MANIFEST and not path.is_dir() else path


def _retrying(read, path: str | os.PathLike):
    """``read(path)``, tried again while the folder is being rewritten: a sibling of a swap in progress exists,
    or ``bundle.json`` changed during the read (a read that met two bundles)."""
    folder, attempt = _folder(path), 1
    while True:
        before = _manifest_bytes(folder)
        try:
            return read(path)
        except (BundleError, OSError):
            if attempt == _ATTEMPTS or not (_rewriting(folder) or _manifest_bytes(folder) != before):
                raise
        attempt += 1
        time.sleep(_PAUSE_S)


def _manifest_bytes(folder: Path) -> bytes | None:
    try:
        return (folder / MANIFEST).read_bytes()
    except OSError:
        return None


def _rewriting(folder: Path) -> bool:
    try:
        with os.scandir(folder.parent) as entries:
            return any(entry.name.startswith(folder.name + mark) for entry in entries for mark in REWRITE_MARKS)
    except OSError:
        return False
