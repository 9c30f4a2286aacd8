"""End-to-end latency: per-example time from raw input to label, and its two parts (featurizing, the
model), for several pipelines timed side by side on the same batches (a bundle, the fp32 checkpoint's path).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from itertools import cycle
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils import benchmark

_BLOCK_S = 0.002  # each latency sample averages the calls of one batch that fit in ~2 ms


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

    Each sample is one batch of distinct inputs (consecutive, cycled), timed with
    ``torch.utils.benchmark`` as ``quantization.measure.time_calls`` times a runner: after a warm-up call,
    the calls of that batch that fit in ~2 ms, averaged, divided by the batch size. Every pipeline is
    timed on the same batch before the next batch, so a change in machine load hits them alike; samples
    are added until each pipeline has ``min_run_time_s`` of end-to-end calls (at least 5 batches).

    Args:
        pipelines: Name -> anything with ``features(inputs)``, ``run(features)`` and ``predict(inputs)``.
        inputs: Raw inputs (texts, or uint8 images as a ``(N, H, W)`` array).
        batch_sizes: Examples per call.
        num_threads: torch threads while timing (ONNX Runtime's are set when a bundle is loaded).
        min_run_time_s: Seconds of timed end-to-end calls per pipeline and batch size.

    Returns:
        ``{name: {str(batch_size): {"end_to_end_ms", "features_ms", "model_ms": {"median", "p90"},
        "features_share": median features / median end to end}}}``.
    """
    results: dict[str, dict[str, dict[str, Any]]] = {name: {} for name in pipelines}
    for n in batch_sizes:
        samples = {name: {"end_to_end": [], "features": [], "model": []} for name in pipelines}
        spent = dict.fromkeys(pipelines, 0.0)
        starts = cycle(range(0, len(inputs), n))
        while min(spent.values()) < min_run_time_s or min(len(s["model"]) for s in samples.values()) < 5:
            start = next(starts)
            rows = [(start + i) % len(inputs) for i in range(n)]  # distinct when n <= len(inputs)
            batch = inputs[rows] if isinstance(inputs, np.ndarray) else [inputs[i] for i in rows]
            for name, pipeline in pipelines.items():
                features = pipeline.features(batch)
                stages = {"end_to_end": (pipeline.predict, batch)}
                stages |= {"features": (pipeline.features, batch), "model": (pipeline.run, features)}
                for stage, (call, argument) in stages.items():
                    seconds, number = _time_batch(call, argument, num_threads)
                    samples[name][stage].append(seconds / n * 1e3)
                    spent[name] += seconds * number if stage == "end_to_end" else 0.0
        for name, stages in samples.items():
            figures = {f"{stage}_ms": _median_p90(values) for stage, values in stages.items()}
            share = figures["features_ms"]["median"] / figures["end_to_end_ms"]["median"]
            results[name][str(n)] = figures | {"features_share": share}
    return results


def _time_batch(call, argument, num_threads: int) -> tuple[float, int]:
    """Seconds per ``call(argument)`` (mean of the calls in ~2 ms, after one warm-up call) and that count."""
    timer = benchmark.Timer("call(x)", globals={"call": call, "x": argument}, num_threads=num_threads)
    with torch.inference_mode():
        per_call = timer.timeit(1).mean  # also the warm-up
        number = max(1, int(_BLOCK_S / max(per_call, 1e-9)))
        return timer.timeit(number).mean, number


def _median_p90(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "p90": statistics.quantiles(values, n=10, method="inclusive")[-1]}
