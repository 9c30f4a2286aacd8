"""Measure quantized artifacts side by side: size, accuracy, agreement with fp32, latency.

Every method is measured from the bytes it would ship, loaded back the way a user loads it,
on the same evaluation batches and the same latency inputs. Benchmarks and the
callback both call :func:`measure_methods`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from quantization.artifacts.onnx_runtime import OrtRunner
from quantization.measure.accuracy import OnePerCall, predict
from quantization.measure.against_fp32 import accuracy_against, paired_outcomes, speed_against
from quantization.measure.latency import Batch, distinct_inputs, time_interleaved, time_runners
from quantization.measure.memory import held_bytes
from quantization.registry import BASELINE, METHODS, Artifact, QuantizationData, Runner, check_methods
from quantization.ship.bundle import preprocessing_json, shippable


@dataclass(frozen=True)
class MeasureSettings:
    """How latency is measured.

    Args:
        latency_batch_sizes: Batch sizes to time, each on distinct inputs drawn in order from the evaluation data.
        num_threads: torch and ONNX Runtime intra-op threads while timing (restored afterwards).
        min_run_time_s: Seconds of timed calls per row and batch size (at least 10 calls), rows taking turns.
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

    @functools.cached_property
    def preprocessing_bytes(self) -> int:
        """The size of its ``preprocessing.json``: serialized once for every row that reads it."""
        return len(preprocessing_json(self.preprocessing))


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
    """Median and p90 milliseconds per ``runner.run`` call on ``x`` alone (prepared once), after a warm-up: every
    call timed by itself (:func:`quantization.measure.latency.time_interleaved`) for ``min_run_time_s`` seconds."""
    with torch.inference_mode():
        prepared = runner.prepare(x)
    return time_interleaved({"": (runner.run, [prepared])}, num_threads, min_run_time_s)[""]


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


def measure_artifact(
    artifact: Artifact,
    model: nn.Module,
    batches: Sequence[Batch],
    inputs: dict[int, torch.Tensor],
    settings: MeasureSettings,
    val_batches: Sequence[Batch] = (),
) -> tuple[dict[str, Any], torch.Tensor]:
    """One report row (without the comparison to fp32) and the artifact's predictions, the artifact timed alone
    on one input per batch size (``inputs``; the report times rows side by side, :func:`measure_methods`).

    The artifact is loaded back from its bytes, as a user loads it (``model``: the fp32 model it came from);
    with ``val_batches`` the row also gets ``val_accuracy``.
    """
    runner = METHODS[artifact.method].load(artifact.data, model, settings.num_threads)
    row, predictions, _ = _accuracy_row(artifact, runner, runner, batches, val_batches, settings)
    latency = {str(n): time_calls(runner, x, settings.num_threads, settings.min_run_time_s) for n, x in inputs.items()}
    fed_sparse = any(x.layout != torch.strided for x in inputs.values())
    return row | {"latency_ms": latency, "sparse_input": bool(fed_sparse and runner.sparse_input)}, predictions


def _accuracy_row(
    artifact: Artifact,
    runner: Runner,
    timed: Runner,
    batches: Sequence[Batch],
    val_batches: Sequence[Batch],
    settings: MeasureSettings,
    shipped: Artifact | None = None,
) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor | None]:
    """A row's figures that one pass over each split gives (accuracy, validation accuracy), and its test and
    validation predictions; ``timed`` is the runner its latency and memory are measured on (the shipped form of
    ``shipped``)."""
    predictions, accuracy = predict(runner, batches)
    row = {
        "method": artifact.label,
        "base_method": artifact.method,
        "artifact": f"{artifact.label}{artifact.suffix}",
        "size_bytes": artifact.size_bytes,
        "memory_bytes": held_bytes(timed, shipped or artifact),
        "accuracy": accuracy,
        "threads": settings.num_threads,
        **artifact.info,
    }
    val_predictions = None
    if val_batches:
        val_predictions, row["val_accuracy"] = predict(runner, val_batches)
    return row, predictions, val_predictions


def shipped_bytes(
    artifact: Artifact, data: QuantizationData, preprocessing: Mapping[str, Any], preprocessing_bytes: int | None = None
) -> dict[str, int]:
    """What a bundle of ``artifact`` ships, in bytes: the artifact as the bundle holds it (an fp32 torch artifact
    as ONNX) and its ``preprocessing.json`` (``quantization.ship.bundle.preprocessing_json``; a text vocabulary can
    outweigh a small model; ``preprocessing_bytes``, its size when known); ``bundle.json`` (under 1 KB) and the
    model card are not counted."""
    input_dim = int(data.example.shape[1])
    artifact_bytes = shippable(artifact, input_dim, sparse_input=preprocessing.get("input") == "text").size_bytes
    if preprocessing_bytes is None:
        preprocessing_bytes = len(preprocessing_json(preprocessing))
    return {"preprocessing_bytes": preprocessing_bytes, "shipped_bytes": artifact_bytes + preprocessing_bytes}


@dataclass
class Measured:
    """A row between the report's stages: its accuracy figures (``row``), test predictions, the runner that is
    timed (the artifact as it ships), the distinct inputs it is timed on, per batch size, and its validation
    predictions (``None`` without a validation split)."""

    row: dict[str, Any]
    predictions: torch.Tensor
    runner: Runner
    inputs: dict[int, list[torch.Tensor]]
    artifact: Artifact
    val_predictions: torch.Tensor | None = None


def evaluate_candidates(
    model: nn.Module,
    candidates: Sequence[Candidate],
    batches: Sequence[Batch],
    data: QuantizationData,
    settings: MeasureSettings,
    val_batches: Sequence[Batch] = (),
    preprocessing: Mapping[str, Any] | None = None,
    baseline: Measured | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[Measured]:
    """Quantize ``model`` per candidate and evaluate each artifact, loaded back from its bytes, in one pass over the
    test split (and one over validation): accuracy, agreement with fp32, size, memory and shipped bytes.

    fp32 (first, unless ``baseline`` is its earlier result) is measured as it ships: the report's fp32 artifact is
    the checkpoint's weights, but a bundle holds it as ONNX, so that is what is timed and what its memory is.
    ``progress(label)`` is called as each row is done.
    """
    own = RowInputs("", batches, val_batches, data, preprocessing or {})
    latency_sets: dict[int, dict[int, list[torch.Tensor]]] = {}  # per RowInputs: the same texts for every row
    measured = []
    for candidate in candidates:
        reads = candidate.inputs or own
        if id(reads) not in latency_sets:
            latency_sets[id(reads)] = distinct_inputs(reads.batches, settings.latency_batch_sizes)
        method_settings = candidate.settings or METHODS[candidate.method].make_settings()
        source = candidate.model if candidate.model is not None else model
        method_data = dataclasses.replace(reads.data, keep_fp32=candidate.keep_fp32)
        artifact = METHODS[candidate.method].quantize(source, method_settings, method_data)
        artifact = dataclasses.replace(artifact, name=candidate.name)
        runner = METHODS[candidate.method].load(artifact.data, source, settings.num_threads)
        timed, shipped = runner, artifact
        if candidate.method == BASELINE:  # fp32, and fp32 rows of other weights (pruned, QAT), ship as ONNX
            shipped = shippable(artifact, int(reads.data.example.shape[1]), reads.data.sparse_input)
            timed = OrtRunner(shipped.data, settings.num_threads) if shipped is not artifact else runner
        test, val = reads.batches, reads.val_batches if val_batches else ()
        evaluated = runner
        if METHODS[candidate.method].activations_per_call:  # its labels depend on the call's other examples
            evaluated = OnePerCall(runner)
        row, predictions, val_predictions = _accuracy_row(artifact, evaluated, timed, test, val, settings, shipped)
        if evaluated is not runner:
            row["evaluated_batch_size"] = 1
        row["settings"] = dataclasses.asdict(method_settings)  # what the method ran with, named in the report
        row["sparse_input"] = bool(reads.data.sparse_input and timed.sparse_input)
        if shipped is not artifact:
            row["timed_as"] = shipped.suffix.lstrip(".")  # fp32 as a bundle ships it
        if reads.preprocessing:
            row |= shipped_bytes(shipped, reads.data, reads.preprocessing, reads.preprocessing_bytes)
        if candidate.inputs is not None:
            row["preprocessing"] = f"{candidate.inputs.name}.preprocessing.json"
        row |= dict(candidate.info)
        base = baseline or (measured[0] if measured else None)
        agreement = float((predictions == base.predictions).float().mean()) if base else 1.0
        row["paired"] = {"test": paired_outcomes(predictions, base.predictions if base else predictions, batches)}
        if val_predictions is not None:
            fp32_val = base.val_predictions if base else val_predictions
            row["paired"]["val"] = paired_outcomes(val_predictions, fp32_val, val_batches)
        row = accuracy_against(row, base.row if base else row, agreement)
        measured.append(Measured(row, predictions, timed, latency_sets[id(reads)], artifact, val_predictions))
        if progress is not None:
            progress(candidate.label)
    return measured


def time_measured(measured: Sequence[Measured], settings: MeasureSettings) -> None:
    """Time every row side by side (:func:`quantization.measure.latency.time_runners`), then give each its speedups
    against fp32 (the first row) as it ships."""
    runners = {str(i): m.runner for i, m in enumerate(measured)}
    inputs = {str(i): m.inputs for i, m in enumerate(measured)}
    figures = time_runners(runners, inputs, settings.num_threads, settings.min_run_time_s)
    for i, m in enumerate(measured):
        m.row["latency_ms"] = figures[str(i)]
    for m in measured:
        m.row = speed_against(m.row, measured[0].row)


def measure_methods(
    model: nn.Module,
    methods: Mapping[str, Any] | Sequence[Candidate],
    batches: Sequence[Batch],
    data: QuantizationData,
    settings: MeasureSettings,
    val_batches: Sequence[Batch] = (),
    preprocessing: Mapping[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], list[Artifact]]:
    """Quantize a read-only ``model`` with each method (fp32 first) and measure every artifact: one pass over the
    test split (and validation) per row, then every row timed side by side.

    Args:
        model: The fp32 ``nn.Module`` (logits out), in eval mode.
        methods: Registry name -> that method's settings, or :class:`Candidate` rows (a row may bring its
            own model, e.g. QAT weights, or layers to keep in fp32); fp32 is added as the baseline.
        batches: Evaluation batches, the same for every method (latency inputs keep their layout).
        data: The example batch and calibration batches the methods may use.
        settings: Latency batch sizes, threads and time per row.
        val_batches: Validation batches: each row also gets ``val_accuracy`` (what a budget is checked on,
            keeping the test split for the final figure).
        preprocessing: How raw inputs become the report's inputs, as a bundle ships it (a datamodule's
            ``preprocessing()``): each row then gets ``shipped_bytes`` (:func:`shipped_bytes`).

    Returns:
        The report rows, in order, and the artifacts they were measured from.
    """
    measured = evaluate_candidates(model, as_candidates(methods), batches, data, settings, val_batches, preprocessing)
    time_measured(measured, settings)
    return [m.row for m in measured], [m.artifact for m in measured]
