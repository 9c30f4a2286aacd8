"""A deployable bundle: a quantized artifact with its preprocessing, labels and model card, in one folder.

``write_bundle`` turns a report's artifact into something that reads raw inputs (text, uint8
images) and answers with labels; ``load_bundle`` runs it with ONNX Runtime or torch
(``weights_only``), without Lightning, scikit-learn or any unpickled code. Every file is plain data.
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
from quantization.artifacts import load_artifact
from quantization.features import ImageFeaturizer, TextFeaturizer, featurizer
from quantization.registry import METHODS, Artifact, Runner
from quantization.torch_artifact import read_payload
from storage.atomic import atomic_write

FORMAT, VERSION = "quantlight-bundle", 1
MANIFEST, PREPROCESSING, CARD_JSON, CARD_MD = "bundle.json", "preprocessing.json", "model_card.json", "model_card.md"
_CHUNK_ROWS = 1024  # rows featurized and run at a time: bounds the dense (rows, input_dim) block


def write_bundle(
    folder: str | os.PathLike,
    artifact: Artifact,
    model: nn.Module | None,
    preprocessing: Mapping[str, Any],
    classes: Sequence[str],
    card: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``artifact`` with its preprocessing, labels and model card into ``folder``; return the folder.

    The folder holds ``bundle.json`` (format, version, method, artifact name and SHA-256, classes, input
    width), the artifact file, ``preprocessing.json``, ``model_card.json`` and ``model_card.md``. Each file
    is written atomically, ``bundle.json`` last, so a reader never sees a half-written bundle. Before
    writing, the artifact is run once on the preprocessing's features: a bundle whose parts do not fit
    together is refused here, not when it is used.

    Args:
        folder: Where the bundle goes (e.g. ``<run>/quantization/bundle``); created if missing.
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
    _check_fits(METHODS[artifact.method].load(artifact.data, None, 1), featurize.input_dim, len(classes))
    folder = Path(folder)
    label = getattr(artifact, "label", artifact.method)  # the report row's name, e.g. int3_weight_only+qat
    name = f"{label}{artifact.suffix}"
    manifest = {"format": FORMAT, "version": VERSION, "method": artifact.method, "artifact": name}
    manifest |= {"sha256": hashlib.sha256(artifact.data).hexdigest(), "classes": classes}
    manifest |= {"input": preprocessing["input"], "input_dim": featurize.input_dim}
    card_data = {"method": label, "summary": METHODS[artifact.method].summary, "artifact": name}
    card_data |= {"size_bytes": artifact.size_bytes, "input": preprocessing["input"], "classes": classes}
    card_data |= {**artifact.info, **(card or {})}
    files = {name: artifact.data, PREPROCESSING: _json_bytes(preprocessing), CARD_JSON: _json_bytes(card_data)}
    files |= {CARD_MD: model_card_markdown(card_data, featurize.input_dim).encode("utf-8")}
    files |= {MANIFEST: _json_bytes(manifest)}  # every file serialized before any is written; the manifest last
    previous = _previous_artifact(folder)
    for file, data in files.items():
        atomic_write(folder / file, data)
    if previous not in (None, name):
        (folder / previous).unlink(missing_ok=True)  # the artifact of the bundle this one replaced
    return folder


def _previous_artifact(folder: Path) -> str | None:
    """The artifact file named by a bundle already in ``folder``, if any."""
    try:
        name = _read_json(folder / MANIFEST).get("artifact")
    except (OSError, ValueError, AttributeError):  # no bundle there, or not one this version wrote
        return None
    return name if isinstance(name, str) and Path(name).name == name else None


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


class Bundle:
    """A loaded bundle: raw inputs in, labels or class probabilities out (see :func:`load_bundle`).

    ONNX Runtime's dynamic int8 quantizes activations per call, so with ``onnx_dynamic_int8`` a label can
    depend on the other inputs of the call (2 of 4,628 test tweets differ between batch 1 and batch 256).

    Args:
        folder: The bundle's folder.
        manifest: Its ``bundle.json``.
        featurize: Raw inputs -> ``(N, input_dim)`` float32 features.
        runner: The loaded artifact.
        card: Its ``model_card.json``.
    """

    def __init__(
        self, folder: Path, manifest: dict, featurize: TextFeaturizer | ImageFeaturizer, runner: Runner, card: dict
    ) -> None:
        self.folder = folder
        self.method: str = manifest["method"]
        self.classes: list[str] = list(manifest["classes"])
        self.input: str = manifest["input"]
        self.input_dim: int = featurize.input_dim
        self.featurize = featurize
        self.runner = runner
        self.card = card

    def features(self, inputs: Sequence) -> np.ndarray:
        """``(N, input_dim)`` float32 features of raw inputs: texts, or ``(N, H, W)`` uint8 images."""
        return self.featurize(inputs)

    def run(self, features: np.ndarray) -> torch.Tensor:
        """``(N, num_classes)`` fp32 logits of features, as the quantization report measured the artifact."""
        return self.runner.logits(torch.from_numpy(features))

    def logits(self, inputs: Sequence) -> torch.Tensor:
        """``(N, num_classes)`` fp32 logits of raw inputs, :data:`_CHUNK_ROWS` rows at a time."""
        if len(inputs) <= _CHUNK_ROWS:
            return self.run(self.features(inputs))
        chunks = [inputs[i : i + _CHUNK_ROWS] for i in range(0, len(inputs), _CHUNK_ROWS)]
        return torch.cat([self.run(self.features(chunk)) for chunk in chunks])

    def predict_proba(self, inputs: Sequence) -> np.ndarray:
        """``(N, num_classes)`` float32 class probabilities (softmax of the logits, as ``predict`` computes them)."""
        return torch.softmax(self.logits(inputs), dim=1).numpy()

    def predict(self, inputs: Sequence) -> list[str]:
        """The predicted label of each raw input (the largest logit)."""
        return [self.classes[i] for i in self.logits(inputs).argmax(dim=1).tolist()]


def load_bundle(path: str | os.PathLike, num_threads: int = 1) -> Bundle:
    """Load a bundle written by :func:`write_bundle`, checking every file first.

    Args:
        path: The bundle folder (or its ``bundle.json``).
        num_threads: ONNX Runtime intra-op threads (torch artifacts use ``torch.set_num_threads``).

    Raises:
        CheckpointError: The folder or one of its files is missing, corrupted, or of another bundle version;
            one line that names the path and the fix.
    """
    folder, manifest = read_manifest(path)
    name = manifest["artifact"]
    artifact = folder / name
    if hashlib.sha256(artifact.read_bytes()).hexdigest() != manifest.get("sha256"):
        raise CheckpointError(
            f"Bundle {folder}: {name} does not match the SHA-256 in {MANIFEST} (truncated or replaced). "
            "Copy the whole folder again, or write the bundle again."
        )
    try:
        featurize = featurizer(_read_bundle_json(folder, PREPROCESSING))
        runner = load_artifact(artifact, num_threads=num_threads)
    except (ValueError, TypeError, KeyError, AttributeError) as err:  # an unknown method, a hand-edited file
        raise CheckpointError(f"Bundle {folder} cannot be used: {err!r}. Write the bundle again.") from err
    card = _read_bundle_json(folder, CARD_JSON) if (folder / CARD_JSON).is_file() else {}
    return Bundle(folder, manifest, featurize, runner, card)


def read_manifest(path: str | os.PathLike) -> tuple[Path, dict]:
    """The bundle's folder and its ``bundle.json``, checked (format, version, artifact present) without
    loading the model: what a caller needs to know before loading it (classes, input kind and width).

    Raises:
        CheckpointError: As :func:`load_bundle`.
    """
    folder = Path(path)
    if folder.is_file() and folder.name == MANIFEST:
        folder = folder.parent
    if not folder.is_dir():
        what = "is a file, not a bundle folder" if folder.exists() else "not found"
        raise CheckpointError(
            f"Bundle {folder} {what}. Pass the folder write_bundle wrote (it holds {MANIFEST}), "
            "e.g. <run>/quantization/bundle."
        )
    if not (folder / MANIFEST).is_file():
        found = ", ".join(sorted(p.name for p in folder.iterdir())[:5]) or "nothing"
        raise CheckpointError(
            f"Bundle {folder} holds no {MANIFEST} (found: {found}): not a bundle. "
            "Write one with quantization.bundle.write_bundle, or pass the folder it wrote."
        )
    manifest = _read_bundle_json(folder, MANIFEST)
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise CheckpointError(
            f"Bundle {folder} is {manifest.get('format')!r} version {manifest.get('version')!r}; this Quantlight "
            f"reads {FORMAT!r} version {VERSION}. Write the bundle again with this version."
        )
    missing = [key for key in ("method", "artifact", "sha256", "classes", "input", "input_dim") if key not in manifest]
    if missing:
        raise CheckpointError(f"Bundle {folder}: {MANIFEST} lacks {', '.join(missing)}. Write the bundle again.")
    name = str(manifest["artifact"])
    if Path(name).name != name or not (folder / name).is_file():
        raise CheckpointError(f"Bundle {folder} lacks its artifact {name}. Copy the whole folder, or write it again.")
    return folder, manifest


def _read_bundle_json(folder: Path, name: str) -> dict:
    if not (folder / name).is_file():
        raise CheckpointError(f"Bundle {folder} lacks {name}. Copy the whole folder, or write the bundle again.")
    try:
        data = _read_json(folder / name)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(
            f"Bundle {folder}: {name} is not valid JSON ({err}). Copy the whole folder again, or write it again."
        ) from err
    if not isinstance(data, dict):
        raise CheckpointError(f"Bundle {folder}: {name} holds no JSON object. Write the bundle again.")
    return data


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1) + "\n").encode("utf-8")


def model_card_markdown(card: Mapping[str, Any], input_dim: int) -> str:
    """The human-readable model card: what the model is, its figures (flattened keys), how to use it.

    >>> print(model_card_markdown({"method": "fp32", "classes": ["a", "b"], "accuracy": 0.9}, 4).splitlines()[0])
    # Model card: fp32
    """
    figures = [f"| {key} | {value} |" for key, value in _flatten(card) if key not in ("method", "summary")]
    use = [
        "```python",
        "from quantization.bundle import load_bundle",
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
