"""A row against the fp32 row: size and memory ratios, accuracy deltas with their 95 % intervals (from the paired
outcomes on the same examples), agreement, and speedups against fp32 as it ships."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from quantization.decide.objectives import paired_interval
from quantization.measure.latency import Batch


def paired_outcomes(predictions: torch.Tensor, baseline: torch.Tensor, batches: Sequence[Batch]) -> dict[str, int]:
    """The paired outcomes against fp32 on the same examples: ``gained`` (this row right, fp32 wrong), ``lost``
    (the reverse) and ``examples``; what an accuracy delta's interval is computed from."""
    labels = torch.cat([y for _, y in batches])
    right, fp32_right = predictions == labels, baseline == labels
    gained, lost = int((right & ~fp32_right).sum()), int((~right & fp32_right).sum())
    return {"gained": gained, "lost": lost, "examples": len(labels)}


def compare_to_baseline(row: dict[str, Any], baseline: dict[str, Any], agreement: float) -> dict[str, Any]:
    """Add size ratio, memory ratio, accuracy delta (percentage points), agreement and speedups against fp32.

    ``slower_than_fp32`` lists the batch sizes where the method's median is above fp32's; with a
    validation accuracy, ``val_accuracy_delta`` is its change in points (what an accuracy budget reads).
    """
    return speed_against(accuracy_against(row, baseline, agreement), baseline)


def accuracy_against(row: dict[str, Any], baseline: dict[str, Any], agreement: float) -> dict[str, Any]:
    """Size and memory ratios, accuracy deltas (points) and agreement against the fp32 row; with the row's
    ``paired`` outcomes per split, each delta's 95 % interval (``accuracy_delta_ci``, ``val_accuracy_delta_ci``:
    :func:`quantization.decide.objectives.paired_interval`)."""
    if "val_accuracy" in row:
        row = row | {"val_accuracy_delta": (row["val_accuracy"] - baseline["val_accuracy"]) * 100}
    for split, key in (("test", "accuracy_delta_ci"), ("val", "val_accuracy_delta_ci")):
        if split in row.get("paired", {}):
            row = row | {key: list(paired_interval(**row["paired"][split]))}
    return row | {
        "size_ratio": baseline["size_bytes"] / row["size_bytes"],
        "memory_ratio": baseline["memory_bytes"] / row["memory_bytes"],
        "accuracy_delta": (row["accuracy"] - baseline["accuracy"]) * 100,
        "agreement": agreement,
    }


def speed_against(row: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Speedups against the fp32 row as it ships, per batch size, and the batch sizes where the row is slower."""
    speedup = {n: baseline["latency_ms"][n]["median"] / t["median"] for n, t in row["latency_ms"].items()}
    return row | {"speedup": speedup, "slower_than_fp32": [int(n) for n, s in speedup.items() if s < 1]}
