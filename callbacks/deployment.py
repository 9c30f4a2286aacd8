"""After the report: the recommended row as a deployable bundle in ``<run>/quantization/bundle/``, its
end-to-end latency (raw input to label) beside the fp32 checkpoint's path, measured side by side, and what a
fresh process that loads it and labels one input costs (peak RSS, import + load time).

Lightning glue around ``quantization.ship.bundle``: the datamodule supplies what the bundle needs
(``preprocessing()``, ``classes``) and what end to end starts from (``raw_test_inputs()``, and
``featurize_raw`` for the checkpoint's own path: scikit-learn's TF-IDF, or the image normalization).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_warn
from torch import nn

from quantization.measure.end_to_end import end_to_end_latency
from quantization.measure.machine import machine_info
from quantization.measure.memory import bundle_footprint
from quantization.registry import Artifact
from quantization.ship.bundle import add_to_card, load_bundle, write_bundle
from quantization.stages import Stages

_E2E_EXAMPLES = 512  # raw test inputs cycled through while timing
_CARD_KEYS = ("size_bytes", "size_ratio", "memory_bytes", "memory_ratio", "accuracy", "accuracy_delta")
_CARD_KEYS += ("val_accuracy_delta", "latency_ms", "speedup", "sparse_input", "shipped_bytes", "preprocessing_bytes")
_CARD_KEYS += ("accuracy_delta_ci", "val_accuracy_delta_ci", "paired")  # each delta's 95 % interval, and its counts
_CARD_KEYS += ("pruned_terms", "vocabulary_terms", "hidden_units", "importance")


class CheckpointPath:
    """The fp32 checkpoint's way from raw input to label: the datamodule's own featurizing, then the net."""

    def __init__(self, datamodule: LightningDataModule, net: nn.Module) -> None:
        self.featurize, self.classes, self.net = datamodule.featurize_raw, datamodule.classes, net

    def features(self, inputs: Any) -> torch.Tensor:
        return self.featurize(inputs)

    def run(self, features: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net(features).softmax(dim=-1)  # (B, num_classes), as predict_step returns

    def predict(self, inputs: Any) -> list[str]:
        return [self.classes[i] for i in self.run(self.features(inputs)).argmax(dim=1).tolist()]


def deployable(datamodule: LightningDataModule | None) -> bool:
    """Whether the datamodule can describe its preprocessing for a bundle."""
    return all(hasattr(datamodule, name) for name in ("preprocessing", "classes", "raw_test_inputs", "featurize_raw"))


def ship(
    folder: Path,
    rows: list[dict[str, Any]],
    decision: dict[str, Any],
    net: nn.Module,
    datamodule: LightningDataModule,
    num_threads: int,
    min_run_time_s: float,
    stages: Stages | None = None,
) -> dict[str, Any] | None:
    """Bundle the recommended row into ``folder / "bundle"`` and time it end to end against the checkpoint.

    Returns:
        ``{"bundle": path, "method": ..., "end_to_end": {pipeline: {batch: figures}}, "footprint": {...}}``
        (:func:`quantization.measure.memory.bundle_footprint`), or ``None`` (with a warning) when there is no
        recommendation (a constraint no row meets) or the recommended artifact cannot be bundled (a torch artifact
        that needs its model class).
    """
    rec = decision["recommendation"]
    if rec["method"] is None:
        rank_zero_warn(f"No deployable bundle written: {rec['reason']}")
        return None
    row = next(r for r in rows if r["method"] == rec["method"])
    path = folder / row["artifact"]
    artifact = Artifact(row["base_method"], path.read_bytes(), path.suffix, name=row["method"])
    card = {
        "method": row["method"],
        "summary": rec["reason"],
        "budget": {
            "max_accuracy_drop": rec["max_accuracy_drop"],
            "objective": rec["objective"],
            "rule": rec.get("rule"),
        },
        "settings": row.get("settings", {}),
        **{key: row[key] for key in _CARD_KEYS if key in row},
        "machine": machine_info(),
    }
    # A row that reads other inputs than the run's (a pruned vocabulary) names its own preprocessing file.
    preprocessing = json.loads((folder / row["preprocessing"]).read_text()) if "preprocessing" in row else None
    stages = stages if stages is not None else Stages()
    with stages("bundle"):
        try:
            bundle = write_bundle(
                folder / "bundle", artifact, net, preprocessing or datamodule.preprocessing(), datamodule.classes, card
            )
        except ValueError as err:
            rank_zero_warn(f"No deployable bundle written: {err}")
            return None
        inputs = datamodule.raw_test_inputs()[:_E2E_EXAMPLES]
        shipped = {"bundle": str(bundle), "method": row["method"], "end_to_end": {}}
        if len(inputs) == 0:
            return shipped
        shipped["footprint"] = footprint(bundle, inputs[0], num_threads)
        add_to_card(bundle, {"footprint": shipped["footprint"]})
    with stages("end to end"):
        pipelines = {
            "fp32 checkpoint": CheckpointPath(datamodule, net),
            f"bundle: {row['method']}": load_bundle(bundle, num_threads, engine="onnxruntime"),  # timed in two parts
        }
        shipped["end_to_end"] = end_to_end_latency(pipelines, inputs, (1,), num_threads, min_run_time_s)
    return shipped


def footprint(bundle: Path, example: Any, num_threads: int) -> dict[str, Any]:
    """:func:`quantization.measure.memory.bundle_footprint`, or the reason it could not be measured (a warning)."""
    try:
        return bundle_footprint(bundle, example, num_threads)
    except (RuntimeError, OSError, ValueError) as err:  # e.g. no fork allowed, a child that ran out of memory
        rank_zero_warn(f"The bundle's fresh-process footprint was not measured: {err}")
        return {"error": str(err)}
