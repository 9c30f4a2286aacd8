"""Measure quantized artifacts side by side: size, accuracy, agreement with fp32, latency.

Every method is measured from the bytes it would ship, loaded back the way a user loads it,
on the same evaluation batches and the same latency inputs. Benchmarks and the
callback both call :func:`measure_methods`.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark
from torchmetrics.functional.classification import multiclass_accuracy

from quantization.bundle import preprocessing_json, shippable
from quantization.memory import held_bytes
from quantization.registry import BASELINE, METHODS, Artifact, QuantizationData, Runner, check_methods

Batch = tuple[torch.Tensor, torch.Tensor]  # (B, input_dim) features, (B,) labels
_BLOCK_S = 0.002  # each latency sample averages the calls that fit in ~2 ms
_MIN_SAMPLES = 5
_WARMUP_CALLS = 3


@dataclass(frozen=True)
class MeasureSettings:
    """How latency is measured.

    Args:
        latency_batch_sizes: Batch sizes to time, each on the first rows of the evaluation data.
        num_threads: torch and ONNX Runtime intra-op threads while timing (restored afterwards).
        min_run_time_s: Seconds of timed calls per method and batch size (at least 5 samples).
    """

    latency_batch_sizes: tuple[int, ...] = (1, 256)
    num_threads: int = 1
    min_run_time_s: float = 0.2


@dataclass(frozen=True)
class RowInputs:
    """What a row's model reads when it is not the report's input (e.g. the columns of a pruned vocabulary): the
    same test and validation examples, in the same order, as that model reads them; the example and calibration
    batches its methods use; and the preprocessing its bundle ships.

    Args:
        name: Names the preprocessing's file in the report folder, ``<name>.preprocessing.json``.
        batches: The test examples as this model reads them, with the report's labels.
        val_batches: The validation examples, likewise.
        data: The example and calibration batches (and ``sparse_input``) the methods use.
        preprocessing: How raw inputs become these batches (``runtime.featurizer`` reads it), plain data.
    """

    name: str
    batches: Sequence[Batch]
    val_batches: Sequence[Batch]
    data: QuantizationData
    preprocessing: Mapping[str, Any]


@dataclass(frozen=True)
class Candidate:
    """One report row: a registered method with its settings, applied to a model.

    Args:
        method: The registry name.
        settings: The method's settings dataclass; ``None``: its defaults.
        name: The row's name when it is not the method's, e.g. ``int3_weight_only+qat``.
        model: The fp32 model to quantize when it is not the report's (e.g. weights trained with QAT).
        info: Extra row fields (plain data), e.g. ``{"qat_epochs": 10}``.
        keep_fp32: Linear layers the method leaves in fp32 (mixed precision; ``QuantizationData.keep_fp32``).
        inputs: What ``model`` reads when it is not the report's input (a pruned vocabulary's columns).
    """

    method: str
    settings: Any = None
    name: str | None = None
    model: nn.Module | None = None
    info: Mapping[str, Any] = field(default_factory=dict)
    keep_fp32: frozenset[str] = frozenset()
    inputs: RowInputs | None = None

    @property
    def label(self) -> str:
        return self.name or self.method


def as_candidates(methods: Mapping[str, Any] | Sequence[Candidate]) -> list[Candidate]:
    """Rows to measure, the fp32 baseline first; a mapping is ``{method: settings}``."""
    if isinstance(methods, Mapping):
        methods = [Candidate(name, settings) for name, settings in methods.items()]
    check_methods([c.method for c in methods])  # names known
    baseline = [c for c in methods if c.label == BASELINE] or [Candidate(BASELINE)]
    return baseline[:1] + [c for c in methods if c.label != BASELINE]


def time_calls(runner: Runner, x: torch.Tensor, num_threads: int, min_run_time_s: float) -> dict[str, float]:
    """Median and p90 milliseconds per ``runner.run`` call on ``x``, after a warm-up.

    ``Timer.blocked_autorange`` returns a few long blocks, too few for a p90; here a
    ``torch.utils.benchmark.Timer`` times many short blocks instead (each sample is the mean of
    the calls in ~2 ms). The input is prepared (cast, made contiguous) once, outside the timing.
    """
    prepared = runner.prepare(x)
    timer = benchmark.Timer("run(x)", globals={"run": runner.run, "x": prepared}, num_threads=num_threads)
    with torch.inference_mode():
        per_call = timer.timeit(_WARMUP_CALLS).mean  # seconds per call; also the warm-up
        number = max(1, int(_BLOCK_S / max(per_call, 1e-9)))
        samples: list[float] = []
        while sum(samples) * number < min_run_time_s or len(samples) < _MIN_SAMPLES:
            samples.append(timer.timeit(number).mean)
    p90 = statistics.quantiles(samples, n=10, method="inclusive")[-1]
    return {"median": statistics.median(samples) * 1e3, "p90": p90 * 1e3}


def latency_inputs(features: torch.Tensor, batch_sizes: Sequence[int]) -> dict[int, torch.Tensor]:
    """The first ``n`` rows of ``features`` per batch size, repeated when there are fewer rows; sparse rows
    stay sparse (each runner is fed what its artifact reads: term ids and weights, or dense rows)."""
    inputs = {}
    for n in batch_sizes:
        rows = torch.arange(n) % len(features)
        if features.layout == torch.strided:
            inputs[n] = features[rows].contiguous()  # (n, input_dim)
        else:
            inputs[n] = features.index_select(0, rows).coalesce()  # (n, input_dim) sparse
    return inputs


def first_rows(batches: Sequence[Batch], n: int) -> torch.Tensor:
    """The first ``n`` rows of the batches' inputs (fewer when there are fewer), in their layout."""
    rows, count = [], 0
    for x, _ in batches:
        rows.append(x if x.layout == torch.strided else x.to_sparse_coo())
        count += len(rows[-1])
        if count >= n:
            break
    joined = torch.cat(rows)
    return joined[:n] if joined.layout == torch.strided else joined.index_select(0, torch.arange(min(n, count)))


def evaluate(runner: Runner, batches: Sequence[Batch]) -> tuple[torch.Tensor, float]:
    """``(N, num_classes)`` fp32 logits over all ``batches`` (fed as given) and their accuracy (torchmetrics, micro)."""
    if not batches:
        raise ValueError("Expected at least one (x, y) batch to evaluate on, got none.")
    logits = torch.cat([runner.logits(x) for x, _ in batches])  # (N, num_classes)
    labels = torch.cat([y for _, y in batches])
    return logits, float(multiclass_accuracy(logits, labels, num_classes=logits.shape[1], average="micro"))


def predict(runner: Runner, batches: Sequence[Batch]) -> tuple[torch.Tensor, float]:
    """Predicted classes over all ``batches`` and their accuracy (:func:`evaluate`)."""
    logits, accuracy = evaluate(runner, batches)
    return logits.argmax(dim=1), accuracy


def measure_artifact(
    artifact: Artifact,
    model: nn.Module,
    batches: Sequence[Batch],
    inputs: dict[int, torch.Tensor],
    settings: MeasureSettings,
    val_batches: Sequence[Batch] = (),
) -> tuple[dict[str, Any], torch.Tensor]:
    """One report row (without the comparison to fp32) and the artifact's predictions.

    The artifact is loaded back from its bytes, as a user loads it (``model``: the fp32 model it came from);
    with ``val_batches`` the row also gets ``val_accuracy``.
    """
    runner = METHODS[artifact.method].load(artifact.data, model, settings.num_threads)
    predictions, accuracy = predict(runner, batches)
    latency = {str(n): time_calls(runner, x, settings.num_threads, settings.min_run_time_s) for n, x in inputs.items()}
    fed_sparse = any(x.layout != torch.strided for x in inputs.values())
    row = {
        "method": artifact.label,
        "base_method": artifact.method,
        "artifact": f"{artifact.label}{artifact.suffix}",
        "size_bytes": artifact.size_bytes,
        "memory_bytes": held_bytes(runner, artifact),
        "accuracy": accuracy,
        "latency_ms": latency,
        "threads": settings.num_threads,
        "sparse_input": bool(fed_sparse and getattr(runner, "sparse_input", False)),
        **artifact.info,
    }
    if val_batches:
        row["val_accuracy"] = evaluate(runner, val_batches)[1]
    return row, predictions


def compare_to_baseline(row: dict[str, Any], baseline: dict[str, Any], agreement: float) -> dict[str, Any]:
    """Add size ratio, memory ratio, accuracy delta (percentage points), agreement and speedups against fp32.

    ``slower_than_fp32`` lists the batch sizes where the method's median is above fp32's; with a
    validation accuracy, ``val_accuracy_delta`` is its change in points (what an accuracy budget reads).
    """
    speedup = {n: baseline["latency_ms"][n]["median"] / t["median"] for n, t in row["latency_ms"].items()}
    if "val_accuracy" in row:
        row = row | {"val_accuracy_delta": (row["val_accuracy"] - baseline["val_accuracy"]) * 100}
    return row | {
        "size_ratio": baseline["size_bytes"] / row["size_bytes"],
        "memory_ratio": baseline["memory_bytes"] / row["memory_bytes"],
        "accuracy_delta": (row["accuracy"] - baseline["accuracy"]) * 100,
        "agreement": agreement,
        "speedup": speedup,
        "slower_than_fp32": [int(n) for n, s in speedup.items() if s < 1],
    }


def shipped_bytes(artifact: Artifact, data: QuantizationData, preprocessing: Mapping[str, Any]) -> dict[str, int]:
    """What a bundle of ``artifact`` ships, in bytes: the artifact as the bundle holds it (an fp32 torch artifact
    as ONNX) and its ``preprocessing.json`` (``quantization.bundle.preprocessing_json``; a text vocabulary can
    outweigh a small model); ``bundle.json`` (under 1 KB) and the model card are not counted."""
    input_dim = int(data.example.shape[1])
    artifact_bytes = shippable(artifact, input_dim, sparse_input=preprocessing.get("input") == "text").size_bytes
    preprocessing_bytes = len(preprocessing_json(preprocessing))
    return {"preprocessing_bytes": preprocessing_bytes, "shipped_bytes": artifact_bytes + preprocessing_bytes}


def measure_methods(
    model: nn.Module,
    methods: Mapping[str, Any] | Sequence[Candidate],
    batches: Sequence[Batch],
    data: QuantizationData,
    settings: MeasureSettings,
    val_batches: Sequence[Batch] = (),
    baseline: tuple[dict[str, Any], torch.Tensor] | None = None,
    preprocessing: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[Artifact]]:
    """Quantize a read-only ``model`` with each method (fp32 first) and measure every artifact.

    Args:
        model: The fp32 ``nn.Module`` (logits out), in eval mode.
        methods: Registry name -> that method's settings, or :class:`Candidate` rows (a row may bring its
            own model, e.g. QAT weights, or layers to keep in fp32); fp32 is added as the baseline.
        batches: Evaluation batches, the same for every method (latency inputs keep their layout).
        data: The example batch and calibration batches the methods may use.
        settings: Latency batch sizes, threads and run time.
        val_batches: Validation batches: each row also gets ``val_accuracy`` (what a budget is checked on,
            keeping the test split for the final figure).
        baseline: The fp32 row and its test predictions from an earlier call, to compare further rows
            with the same figures (fp32 is then not measured again).
        preprocessing: How raw inputs become the report's inputs, as a bundle ships it (a datamodule's
            ``preprocessing()``): each row then gets ``shipped_bytes`` (:func:`shipped_bytes`).

    Returns:
        The report rows, in order, and the artifacts they were measured from.
    """
    own = RowInputs("", batches, val_batches, data, preprocessing or {})
    timed: dict[int, dict[int, torch.Tensor]] = {}  # latency inputs per RowInputs
    rows, artifacts = [], []
    candidates = as_candidates(methods)
    baseline_row, baseline_predictions = baseline if baseline else ({}, torch.empty(0))
    if baseline:
        candidates = [c for c in candidates if c.label != BASELINE]
    for candidate in candidates:
        reads = candidate.inputs or own
        if id(reads) not in timed:
            first = first_rows(reads.batches, max(settings.latency_batch_sizes))
            timed[id(reads)] = latency_inputs(first, settings.latency_batch_sizes)
        method_settings = candidate.settings or METHODS[candidate.method].make_settings()
        source = candidate.model if candidate.model is not None else model
        method_data = dataclasses.replace(reads.data, keep_fp32=candidate.keep_fp32)
        artifact = METHODS[candidate.method].quantize(source, method_settings, method_data)
        artifact = dataclasses.replace(artifact, name=candidate.name)
        row, predictions = measure_artifact(
            artifact, source, reads.batches, timed[id(reads)], settings, reads.val_batches if val_batches else ()
        )
        row["settings"] = dataclasses.asdict(method_settings)  # what the method ran with, named in the report
        if reads.preprocessing:
            row |= shipped_bytes(artifact, reads.data, reads.preprocessing)
        if candidate.inputs is not None:
            row["preprocessing"] = f"{candidate.inputs.name}.preprocessing.json"
        row |= dict(candidate.info)
        if candidate.label == BASELINE:
            baseline_row, baseline_predictions = row, predictions
        agreement = float((predictions == baseline_predictions).float().mean())
        rows.append(compare_to_baseline(row, baseline_row, agreement))
        artifacts.append(artifact)
    return rows, artifacts


def baseline_of(
    rows: Sequence[dict[str, Any]],
    artifacts: Sequence[Artifact],
    model: nn.Module,
    batches: Sequence[Batch],
    num_threads: int = 1,
) -> tuple[dict[str, Any], torch.Tensor]:
    """The fp32 row of a report and its test predictions, for :func:`measure_methods`' ``baseline``."""
    index = next(i for i, row in enumerate(rows) if row["method"] == BASELINE)
    runner = METHODS[BASELINE].load(artifacts[index].data, model, num_threads)
    return rows[index], predict(runner, batches)[0]
