"""Latency as a deployment feels it: every call timed on its own, over many distinct inputs, rows interleaved.

A row's batch-1 figure is not one text timed over and over: a term bag's cost follows the text's terms, so each
call takes the next of many test inputs. Every call is timed alone, so the p90 is the p90 of calls (a runner
slow on one call in five shows it), and rows take turns of ~1 ms each until every row has spent its time budget,
so a machine that slows down midway slows every row alike instead of landing in their ratios.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import cycle
from time import perf_counter
from typing import Any

import torch

from quantization.registry import Runner

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, input_dim) features, (B,) labels
_TURN_S = 0.001  # each turn a row runs the calls that fit in ~1 ms before the next row's turn
_MIN_CALLS = 10
_WARMUP_CALLS = 3
DISTINCT_INPUTS = 512  # at most this many different examples are timed per row and batch size


@contextmanager
def torch_threads(num_threads: int) -> Iterator[None]:
    """torch's intra-op threads set to ``num_threads`` inside, restored after (ONNX Runtime's are set at load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def distinct_inputs(batches: Sequence[Batch], batch_sizes: Sequence[int], count: int = DISTINCT_INPUTS):
    """Per batch size ``n``, up to ``count // n`` (at least one) different inputs of ``n`` consecutive examples of
    ``batches``, cycled when the split has fewer; sparse rows stay sparse (each runner is fed what it reads).

    >>> x = torch.arange(8.0).view(4, 2)
    >>> sets = distinct_inputs([(x, torch.zeros(4))], [1, 3], count=6)
    >>> [t[:, 0].tolist() for t in sets[1]][:3], [t[:, 0].tolist() for t in sets[3]]
    ([[0.0], [2.0], [4.0]], [[0.0, 2.0, 4.0], [6.0, 0.0, 2.0]])
    """
    features = first_rows(batches, max(max(count // n, 1) * n for n in batch_sizes))
    total = len(features)
    sets: dict[int, list[torch.Tensor]] = {}
    for n in batch_sizes:
        k = max(1, min(count // n, -(-total // n)))  # enough inputs to hold every example once, at most count // n
        chosen = [features.index_select(0, torch.arange(i * n, (i + 1) * n) % total) for i in range(k)]
        sets[n] = [x.contiguous() if x.layout == torch.strided else x.coalesce() for x in chosen]
    return sets


def first_rows(batches: Sequence[Batch], n: int) -> torch.Tensor:
    """The first ``n`` examples of ``batches`` (fewer when there are fewer), in their layout."""
    rows, count = [], 0
    for x, _ in batches:
        rows.append(x if x.layout == torch.strided else x.to_sparse_coo())
        count += len(rows[-1])
        if count >= n:
            break
    joined = torch.cat(rows)
    return joined[:n] if joined.layout == torch.strided else joined.index_select(0, torch.arange(min(n, count)))


def per_call_figures(seconds: Sequence[float]) -> dict[str, float]:
    """Median and p90 (milliseconds) of per-call times, and how many calls they summarize.

    >>> {key: round(value, 6) for key, value in per_call_figures([0.001] * 8 + [0.005] * 2).items()}
    {'median': 1.0, 'p90': 5.0, 'calls': 10}
    """
    p90 = statistics.quantiles(seconds, n=10, method="inclusive")[-1]
    return {"median": statistics.median(seconds) * 1e3, "p90": p90 * 1e3, "calls": len(seconds)}


def time_interleaved(
    runs: Mapping[Any, tuple[Callable[[Any], Any], Sequence[Any]]], num_threads: int, budget_s: float
) -> dict[Any, dict[str, float]]:
    """Time calls side by side: ``runs`` maps a name to ``(call, inputs)``; each call of ``call`` is timed alone on
    the next of its ``inputs`` (cycled). Names take turns of ~1 ms of calls, the first turn rotating each round,
    until each has ``budget_s`` seconds of timed calls and at least 10 calls.

    Returns:
        Name -> :func:`per_call_figures` of its calls.
    """
    feeds = {name: cycle(inputs) for name, (_, inputs) in runs.items()}
    samples: dict[Any, list[float]] = {name: [] for name in runs}
    per_turn: dict[Any, int] = {}
    with torch_threads(num_threads), torch.inference_mode():
        for name, (call, inputs) in runs.items():
            start = perf_counter()
            for x in inputs[:_WARMUP_CALLS] if len(inputs) >= _WARMUP_CALLS else [inputs[0]] * _WARMUP_CALLS:
                call(x)  # first calls allocate, compile and fill caches: not what a served call costs
            per_call = (perf_counter() - start) / _WARMUP_CALLS
            per_turn[name] = max(1, int(_TURN_S / max(per_call, 1e-9)))
        order = list(runs)
        while order:
            for name in order:
                call, feed, times = runs[name][0], feeds[name], samples[name]
                for _ in range(per_turn[name]):
                    x = next(feed)
                    start = perf_counter()
                    call(x)
                    times.append(perf_counter() - start)
            order = [name for name in order[1:] + order[:1] if _wants_more(samples[name], budget_s)]
    return {name: per_call_figures(times) for name, times in samples.items()}


def _wants_more(times: list[float], budget_s: float) -> bool:
    return len(times) < _MIN_CALLS or sum(times) < budget_s


def time_runners(
    runners: Mapping[str, Runner],
    inputs: Mapping[str, Mapping[int, Sequence[torch.Tensor]]],
    num_threads: int,
    budget_s: float,
) -> dict[str, dict[str, dict[str, float]]]:
    """Per runner and batch size, :func:`time_interleaved` figures of ``runner.run`` on its distinct inputs (each
    prepared once, outside the timing: cast, or turned into the term ids and weights the artifact reads).

    Args:
        runners: Name -> a loaded artifact.
        inputs: Name -> batch size -> the inputs that runner is timed on (:func:`distinct_inputs`).
        num_threads: torch threads while timing.
        budget_s: Seconds of timed calls per runner and batch size.

    Returns:
        ``{name: {str(batch_size): {"median", "p90", "calls"}}}``, milliseconds per call.
    """
    figures: dict[str, dict[str, dict[str, float]]] = {name: {} for name in runners}
    sizes = sorted({n for per_size in inputs.values() for n in per_size})
    for n in sizes:
        with torch.inference_mode():
            runs = {name: (r.run, [r.prepare(x) for x in inputs[name][n]]) for name, r in runners.items()}
        for name, timing in time_interleaved(runs, num_threads, budget_s).items():
            figures[name][str(n)] = timing
    return figures
