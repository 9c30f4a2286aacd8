"""End-to-end latency: per-example time from raw input to label, and its two parts (featurizing, the
model), for several pipelines timed side by side on the same inputs (a bundle, the fp32 checkpoint's path).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from quantization.measure.latency import time_interleaved

_PARTS = ("end_to_end", "features", "model")


class Pipeline(Protocol):
    """Raw inputs to labels in two timed parts: a :class:`Bundle`, or any path a benchmark compares with it."""

    def features(self, inputs: Sequence) -> Any: ...

    def run(self, features: Any) -> Any: ...

    def predict(self, inputs: Sequence) -> list[str]: ...


def end_to_end_latency(
    pipelines: Mapping[str, Pipeline],
    inputs: Sequence,
    batch_sizes: Sequence[int] = (1, 256),
    num_threads: int = 1,
    min_run_time_s: float = 0.2,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Per-example milliseconds from raw input to label, and its two parts, for pipelines side by side.

    Each pipeline's ``predict`` (end to end), ``features`` and ``run`` (the model, on features computed before
    the timing) are called on batches of consecutive distinct inputs, every call timed alone and all of them
    taking turns (:func:`quantization.measure.latency.time_interleaved`), until each has ``min_run_time_s`` seconds of
    calls: a change in machine load hits every pipeline alike.

    Args:
        pipelines: Name -> anything with ``features(inputs)``, ``run(features)`` and ``predict(inputs)``.
        inputs: Raw inputs (texts, or uint8 images as a ``(N, H, W)`` array).
        batch_sizes: Examples per call.
        num_threads: torch threads while timing (ONNX Runtime's are set when a bundle is loaded).
        min_run_time_s: Seconds of timed calls per pipeline, part and batch size.

    Returns:
        ``{name: {str(batch_size): {"end_to_end_ms", "features_ms", "model_ms": {"median", "p90", "calls"},
        "features_share": median features / median end to end}}}``, per example.
    """
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in pipelines}
    for n in batch_sizes:
        batches = [_batch(inputs, start, n) for start in range(0, max(len(inputs) - n, 0) + 1, n)] or [
            _batch(inputs, 0, n)
        ]
        runs = {}
        for name, pipeline in pipelines.items():
            runs[(name, "end_to_end")] = (pipeline.predict, batches)
            runs[(name, "features")] = (pipeline.features, batches)
            runs[(name, "model")] = (pipeline.run, [pipeline.features(batch) for batch in batches])
        timed = time_interleaved(runs, num_threads, min_run_time_s)
        for name in pipelines:
            figures = {f"{part}_ms": _per_example(timed[(name, part)], n) for part in _PARTS}
            share = figures["features_ms"]["median"] / figures["end_to_end_ms"]["median"]
            results[name][str(n)] = figures | {"features_share": share}
    return results


def _batch(inputs: Sequence, start: int, n: int) -> Sequence:
    rows = [(start + i) % len(inputs) for i in range(n)]  # distinct when n <= len(inputs)
    return inputs[rows] if isinstance(inputs, np.ndarray) else [inputs[i] for i in rows]


def _per_example(figures: Mapping[str, float], n: int) -> dict[str, float]:
    return {"median": figures["median"] / n, "p90": figures["p90"] / n, "calls": figures["calls"]}
