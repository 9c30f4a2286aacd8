"""Writing deployable bundles: a quantized artifact with its preprocessing, labels and model card, in one folder.

``write_bundle`` turns a report's artifact into something that reads raw inputs (text, uint8 images) and
answers with labels; the ``runtime`` package loads it with numpy and ONNX Runtime alone. An fp32 torch
artifact is shipped as ONNX (the same weights, the same arithmetic), and a text model's artifact reads term
ids and weights (``quantization.artifacts.embedding_bag``). Other torch artifacts stay ``.pt``: their bundle needs
torch, and :func:`load_bundle` here (the engine's, with torch) loads those too. Every file is plain data, and every file
is in ``bundle.json`` with its SHA-256; a bundle is written aside and swapped in whole (docs/safety.md).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from errors import CheckpointError
from quantization.artifacts.embedding_bag import table_rows
from quantization.artifacts.onnx_runtime import OrtRunner, export_onnx, sparse_artifact
from quantization.artifacts.torch_artifact import FP32_CODEC, decode_model, read_payload
from quantization.registry import BASELINE, METHODS, Artifact, Runner
from quantization.ship.native_graph import bundle_files
from runtime import Bag, Bundle, BundleError, NativeBundle, featurizer
from runtime import bundle as runtime_bundle
from runtime.bundle import CARD_JSON, CARD_MD, FORMAT, MANIFEST, PREPROCESSING, VERSION
from storage.atomic import atomic_folder

__all__ = ["CARD_JSON", "CARD_MD", "FORMAT", "MANIFEST", "PREPROCESSING", "VERSION", "Bundle", "load_bundle"]


def write_bundle(
    folder: str | os.PathLike,
    artifact: Artifact,
    model: nn.Module | None,
    preprocessing: Mapping[str, Any],
    classes: Sequence[str],
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``artifact`` with its preprocessing, labels and model card into ``folder``; return the folder.

    The folder holds ``bundle.json`` (format, version, method, artifact name, classes, input width, and every
    other file with its SHA-256), the artifact file, ``preprocessing.json``, ``model_card.json`` and
    ``model_card.md``. The whole folder is written beside ``folder`` and renamed into its place
    (:func:`storage.atomic.atomic_folder`), so a reader sees the old bundle or the new one, never a mix. Before
    writing, the artifact is run once on the preprocessing's features: a bundle whose parts do not fit
    together is refused here, not when it is used.

    Args:
        folder: Where the bundle goes (e.g. ``<run>/quantization/bundle``): a new or empty folder, or a bundle
            (replaced whole); a folder of other files is refused and kept.
        artifact: A quantized model from ``quantization.quantize``. A ``.pt`` artifact must load on its own
            (a flat ``nn.Sequential``): a bundle carries no model code.
        model: The fp32 model the artifact came from, or ``None``; only named in the refusal above.
        preprocessing: A datamodule's ``preprocessing()`` (plain data).
        classes: Label names in class-index order.
        card: Figures for the model card (size, accuracy, latency, budget, machine, ...), plain data.
    """
    classes = [str(name) for name in classes]
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ValueError(f"Expected `classes` to list at least two distinct labels, got {classes}.")
    if artifact.method not in METHODS:
        raise ValueError(f"Expected `artifact` of a registered method, got method {artifact.method!r}.")
    if artifact.suffix == ".pt" and read_payload(artifact.data)["architecture"] is None:
        raise ValueError(
            f"The {artifact.method} artifact of {type(model).__name__ if model is not None else 'this model'} "
            "needs its Python model class to load, and a bundle carries no code. Bundle an ONNX method's "
            "artifact (onnx_*), or a torch artifact of a flat nn.Sequential."
        )
    featurize = featurizer(preprocessing)
    artifact = shippable(artifact, featurize.input_dim, sparse_input=preprocessing.get("input") == "text")
    if artifact.suffix == ".onnx":
        runner = OrtRunner(artifact.data)
        rows = table_rows(artifact.data)
        if rows is not None and rows != featurize.input_dim:
            raise ValueError(
                f"The artifact does not take the preprocessing's {featurize.input_dim} features per example (it "
                f"reads term ids of a {rows}-term vocabulary). Bundle the preprocessing of the data the model was "
                "trained on."
            )
    else:
        runner = METHODS[artifact.method].load(artifact.data, None, 1)
    _check_fits(runner, featurize.input_dim, len(classes))
    folder = Path(folder)
    _check_replaceable(folder)
    label = getattr(artifact, "label", artifact.method)  # the report row's name, e.g. int3_weight_only+qat
    name = f"{label}{artifact.suffix}"
    needs = "onnxruntime" if artifact.suffix == ".onnx" else "torch"
    manifest = {"format": FORMAT, "version": VERSION, "method": artifact.method, "artifact": name}
    manifest |= {"sha256": hashlib.sha256(artifact.data).hexdigest(), "classes": classes}
    manifest |= {"input": preprocessing["input"], "input_dim": featurize.input_dim}
    manifest |= {"runtime": needs, "sparse_input": bool(getattr(runner, "sparse_input", False))}
    card_data = {"method": label, "summary": METHODS[artifact.method].summary, "artifact": name}
    card_data |= {"size_bytes": artifact.size_bytes, "input": preprocessing["input"], "classes": classes}
    card_data |= {"runtime": needs, "sparse_input": manifest["sparse_input"]}
    preprocessing_data = preprocessing_json(preprocessing)
    card_data |= {**artifact.info, **(card or {}), "artifact_bytes": artifact.size_bytes}  # as shipped (fp32: ONNX)
    card_data |= {"preprocessing_bytes": len(preprocessing_data)}
    card_data |= {"shipped_bytes": artifact.size_bytes + len(preprocessing_data)}  # what the report's rows count
    files = {name: artifact.data, PREPROCESSING: preprocessing_data, CARD_JSON: _json_bytes(card_data)}
    sha256 = manifest["sha256"]
    native, card_data["native"] = bundle_files(artifact.data, artifact.suffix, preprocessing, classes, sha256)
    files |= native | {CARD_JSON: _json_bytes(card_data)}  # the native model (runtime/native), when it computes it
    files |= {CARD_MD: model_card_markdown(card_data, featurize.input_dim).encode("utf-8")}
    return _publish(folder, files, manifest)


def add_files(folder: str | os.PathLike, files: Mapping[str, bytes]) -> Path:
    """Add (or replace) files of a bundle, e.g. a native model or a folder of sources (``"c/model.c"``), and list
    them in its ``bundle.json`` with their SHA-256; the bundle is rewritten whole, as :func:`write_bundle` does."""
    return _republish(*_read_bundle_files(folder), files)


def _republish(folder: Path, manifest: Mapping[str, Any], contents: Mapping[str, bytes], files: Mapping[str, bytes]):
    """The bundle read as ``(folder, manifest, contents)``, written again whole with ``files`` added or replaced."""
    return _publish(folder, {**contents, **files}, {k: v for k, v in manifest.items() if k != "files"})


def _publish(folder: Path, files: Mapping[str, bytes], manifest: Mapping[str, Any]) -> Path:
    """Write ``files`` (relative paths, subfolders allowed) and ``bundle.json`` listing every file under the folder
    with its SHA-256 into a sibling folder, then swap it in: a reader sees this bundle whole or the one before."""
    outside = [name for name in files if Path(name).is_absolute() or ".." in Path(name).parts or name == MANIFEST]
    if outside:
        raise ValueError(f"Expected bundle file names relative to the bundle (not {MANIFEST}), got {outside}.")
    with atomic_folder(folder) as tmp:
        for file, data in files.items():
            (tmp / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp / file).write_bytes(data)
        listed = {  # every file, whoever wrote it into the folder, hashed as it is on disk
            path.relative_to(tmp).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(tmp.rglob("*"))
            if path.is_file() and path.relative_to(tmp).as_posix() != MANIFEST
        }
        (tmp / MANIFEST).write_bytes(_json_bytes({**manifest, "version": VERSION, "files": listed}))
    return folder


def _check_replaceable(folder: Path) -> None:
    """Refuse to replace a file, or a folder that holds files but no bundle: write_bundle swaps the folder whole."""
    if folder.is_dir() and not (folder / MANIFEST).is_file() and any(folder.iterdir()):
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:3])
        raise ValueError(
            f"{folder} holds other files ({found}) and no {MANIFEST}: a bundle replaces its folder whole, so it is "
            "not written there. Pass a new or empty folder, or a bundle's."
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{folder} is a file; a bundle is a folder. Pass a new or empty folder, or a bundle's.")


def shippable(artifact: Artifact, input_dim: int, sparse_input: bool) -> Artifact:
    """The artifact a bundle holds: an fp32 torch artifact becomes ONNX (the same weights and arithmetic, run
    by ONNX Runtime without torch; for text, reading term ids and weights); every other artifact as it is."""
    if artifact.method != BASELINE or artifact.suffix != ".pt":
        return artifact
    payload = read_payload(artifact.data)
    if payload["architecture"] is None:
        return artifact  # refused below: it needs its Python model class
    model = decode_model(artifact.data, FP32_CODEC)
    data = export_onnx(model, torch.zeros(1, input_dim))
    info = dict(artifact.info)
    if sparse_input:
        data, info = sparse_artifact(data, data, model, None, info)
    return Artifact(artifact.method, data, ".onnx", info | {"shipped_as": "onnx"}, artifact.name)


def _check_fits(runner: Runner, input_dim: int, num_classes: int) -> None:
    try:
        logits = runner.logits(torch.zeros(1, input_dim))  # (1, input_dim) -> (1, num_classes)
    except Exception as err:  # ONNX Runtime and torch raise their own types for a wrong input width
        raise ValueError(
            f"The artifact does not take the preprocessing's {input_dim} features per example "
            f"({str(err).splitlines()[0][:160]}). Bundle the preprocessing of the data the model was trained on."
        ) from err
    if tuple(logits.shape) != (1, num_classes):
        raise ValueError(
            f"The artifact gives {logits.shape[-1]} logits per example but `classes` names {num_classes} labels. "
            "Pass the classes of the data the model was trained on."
        )


class TorchModel:
    """A torch artifact behind a bundle (it needs torch): term bags or dense rows in, numpy logits out."""

    def __init__(self, runner: Runner, input_dim: int) -> None:
        self.runner, self.input_dim = runner, input_dim
        self.sparse_input = False

    def logits(self, features: np.ndarray | Bag) -> np.ndarray:
        dense = features.dense(self.input_dim) if isinstance(features, Bag) else features
        return self.runner.logits(torch.from_numpy(np.ascontiguousarray(dense, dtype=np.float32))).numpy()


def load_bundle(path: str | os.PathLike, num_threads: int = 1, engine: str | None = None) -> Bundle | NativeBundle:
    """Load a bundle written by :func:`write_bundle`, checking every file first: ONNX artifacts with the
    ``runtime`` package (no torch needed), torch artifacts with torch (``weights_only``, no unpickled code).

    Args:
        path: The bundle folder (or its ``bundle.json``).
        num_threads: ONNX Runtime intra-op threads (torch artifacts use ``torch.set_num_threads``).
        engine: As ``runtime.load_bundle``'s (``auto``: the native core where it is built and the bundle has one).

    Raises:
        CheckpointError: The folder or one of its files is missing, corrupted, or of another bundle version;
            one line that names the path and the fix.
    """
    if Path(read_manifest(path)[1]["artifact"]).suffix == ".onnx":
        try:
            return runtime_bundle.load_bundle(path, num_threads, engine)
        except BundleError as err:
            raise CheckpointError(str(err)) from err
    folder, manifest, files = _read_bundle_files(path)  # one consistent bundle, every file checked
    try:
        featurize = featurizer(runtime_bundle.bundle_json(folder, PREPROCESSING, files))
        data = files[manifest["artifact"]]  # checked bytes, loaded as they were read
        runner = METHODS[read_payload(data)["method"]].load(data, None, num_threads)
        card = runtime_bundle.bundle_json(folder, CARD_JSON, files) if CARD_JSON in files else {}
        model = TorchModel(runner, featurize.input_dim)
        runtime_bundle.check_shapes(folder, manifest, featurize, model)
    except BundleError as err:
        raise CheckpointError(str(err)) from err
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # an unknown method, a hand-edited file
        raise CheckpointError(f"Bundle {folder} cannot be used: {err!r}. Write the bundle again.") from err
    return Bundle(folder, manifest, featurize, model, card, engine="torch")


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    """The bundle's folder and its checked ``bundle.json`` (``runtime.read_manifest``), errors as one line
    for the CLI (:class:`errors.CheckpointError`)."""
    try:
        return runtime_bundle.read_manifest(path)
    except BundleError as err:
        raise CheckpointError(str(err)) from err


def add_to_card(folder: str | os.PathLike, figures: Mapping[str, Any]) -> None:
    """Add figures measured after writing (e.g. a fresh process's footprint) to a bundle's model card."""
    folder, manifest, files = _read_bundle_files(folder)
    card = runtime_bundle.bundle_json(folder, CARD_JSON, files) | dict(figures)
    markdown = model_card_markdown(card, int(manifest["input_dim"])).encode("utf-8")
    _republish(folder, manifest, files, {CARD_JSON: _json_bytes(card), CARD_MD: markdown})  # the files read above


def _read_bundle_files(path: str | os.PathLike) -> tuple[Path, dict, dict[str, bytes]]:
    """:func:`runtime.bundle.read_bundle_files`, errors as one line for the CLI (:class:`errors.CheckpointError`)."""
    try:
        return runtime_bundle.read_bundle_files(path)
    except BundleError as err:
        raise CheckpointError(str(err)) from err


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def preprocessing_json(preprocessing: Mapping[str, Any]) -> bytes:
    """``preprocessing.json`` as a bundle ships it: compact JSON, a text vocabulary as its terms in column order
    (a term -> column mapping costs half as much again), ``idf`` as Python writes floats (the shortest text that
    reads back as the same float64, so the featurizer stays exact). What it costs counts in a row's shipped bytes.

    >>> preprocessing_json({"input": "text", "vectorizer": {"vocabulary": {"car": 1, "good": 0}, "idf": [1.5, 2.0]}})
    b'{"input":"text","vectorizer":{"vocabulary":["good","car"],"idf":[1.5,2.0]}}\\n'
    """
    data = dict(preprocessing)
    vectorizer = data.get("vectorizer")
    if isinstance(vectorizer, Mapping) and isinstance(vectorizer.get("vocabulary"), Mapping):
        terms = sorted(vectorizer["vocabulary"], key=vectorizer["vocabulary"].__getitem__)  # (D,) in column order
        data["vectorizer"] = {**vectorizer, "vocabulary": terms}
    return (json.dumps(data, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")


_LOADERS = {  # the import that loads a bundle, by what its artifact needs
    "onnxruntime": "from runtime import load_bundle  # numpy and onnxruntime only",
    "torch": "from quantization.ship.bundle import load_bundle  # a torch artifact: needs torch",
}


def model_card_markdown(card: Mapping[str, Any], input_dim: int) -> str:
    """The human-readable model card: what the model is, its figures (flattened keys), how to use it.

    >>> print(model_card_markdown({"method": "fp32", "classes": ["a", "b"], "accuracy": 0.9}, 4).splitlines()[0])
    # Model card: fp32
    """
    figures = [f"| {key} | {value} |" for key, value in _flatten(card) if key not in ("method", "summary")]
    use = [
        "```python",
        _LOADERS.get(card.get("runtime"), _LOADERS["onnxruntime"]),
        "",
        'bundle = load_bundle("<this folder>")',
        "bundle.predict(inputs)  # texts (a list of str), or (N, H, W) uint8 images -> labels",
        "bundle.predict_proba(inputs)  # (N, classes) probabilities",
        "```",
        "",
        "Or `python cli.py predict -c <the training config> --artifact <this folder> ...` (text: "
        "`--data.init_args.predict_path texts.txt`; images: `--inputs <images-idx3-ubyte or image files>`).",
    ]
    lines = [f"# Model card: {card['method']}", "", card.get("summary", ""), "", f"Input width: {input_dim}.", ""]
    return "\n".join([*lines, "| figure | value |", "|---|---|", *figures, "", "## Use", "", *use, ""])


def _flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """``(key / subkey, value)`` rows of nested plain data; lists of scalars joined by commas."""
    if isinstance(data, Mapping):
        return [row for key, value in data.items() for row in _flatten(value, f"{prefix}{key} / ")]
    if isinstance(data, (list, tuple)) and all(not isinstance(v, (Mapping, list, tuple)) for v in data):
        return [(prefix[:-3], ", ".join(map(str, data)))]
    if isinstance(data, float):
        return [(prefix[:-3], f"{data:.6g}")]
    return [(prefix[:-3], str(data))]
