"""The whole report in one straight line of stages: evaluate every row, decide fallbacks, time the rows side by
side, recommend, write artifacts and reports.

The Lightning callback and the benchmarks call :func:`quantization_report`; it needs a model,
evaluation batches and a folder, nothing from Lightning.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import nn
from torch.utils.tensorboard import SummaryWriter

from quantization.artifacts.files import save_artifact
from quantization.decide.decision import Budget, decision_of, plan_fallbacks, with_fallbacks
from quantization.measure.rows import (
    Batch,
    Candidate,
    MeasureSettings,
    as_candidates,
    evaluate_candidates,
    time_measured,
)
from quantization.registry import QuantizationData
from quantization.ship.bundle import preprocessing_json
from quantization.ship.report import log_tensorboard, write_report
from quantization.stages import Stages
from storage.atomic import atomic_write


def quantization_report(
    model: nn.Module,
    methods: Mapping[str, Any] | Sequence[Candidate],
    batches: Sequence[Batch],
    data: QuantizationData,
    folder: Path,
    settings: MeasureSettings,
    writer: SummaryWriter | None = None,
    step: int = 0,
    val_batches: Sequence[Batch] = (),
    budget: Budget | None = None,
    preprocessing: Mapping[str, Any] | None = None,
    stages: Stages | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """Measure every method on a read-only ``model``; write artifacts, ``report.json`` and ``report.md``.

    Args:
        model: The fp32 model, in eval mode.
        methods: Registry name -> the method's settings, or report rows (:class:`Candidate`); fp32 is
            always measured first.
        batches: Evaluation batches (the test split), the same for every method.
        data: Example and calibration batches the methods may use.
        folder: Where the artifacts and reports go.
        settings: Latency batch sizes, threads and run time.
        writer: A TensorBoard ``SummaryWriter`` for scalars, the table, a chart and HParams.
        step: The global step the TensorBoard records carry.
        val_batches: Validation batches, which an accuracy ``budget`` is checked on.
        budget: With validation batches: rank layers, add fallback rows and recommend one row.
        preprocessing: How raw inputs become ``batches`` (a datamodule's ``preprocessing()``): rows get the bytes a
            bundle ships (artifact + ``preprocessing.json``), and a row that reads other inputs (a pruned
            vocabulary) has its own preprocessing written beside its artifact.
        stages: Where the stages' seconds are recorded and shown (a new, silent-when-piped one by default).

    Returns:
        The rows, and the decision (``recommendation``, ``sensitivity``) when a budget was given.
    """
    stages = stages if stages is not None else Stages()
    candidates = as_candidates(methods)
    with stages("evaluate", rows=len(candidates)) as done:
        measured = evaluate_candidates(
            model, candidates, batches, data, settings, val_batches, preprocessing, progress=done
        )
    deciding = budget is not None and bool(val_batches)
    sensitivity: dict[str, dict[str, Any]] = {}
    if deciding:
        with stages("sensitivity"):
            rows = [m.row for m in measured]
            extra, sensitivity = plan_fallbacks(model, rows, val_batches, data, settings, budget)
            if extra:
                fp32 = measured[0]
                new = evaluate_candidates(model, extra, batches, data, settings, val_batches, preprocessing, fp32)
                measured = with_fallbacks(measured, new)
    with stages("latency", rows=len(measured)):
        time_measured(measured, settings)
    rows = [m.row for m in measured]
    decision = decision_of(rows, sensitivity, budget) if deciding else None
    with stages("write"):
        for m in measured:
            save_artifact(m.artifact, folder)
        own_inputs = {c.inputs.name: c.inputs for c in candidates if c.inputs is not None}
        for name, inputs in own_inputs.items():  # a pruned vocabulary, beside the artifacts that read it
            atomic_write(folder / f"{name}.preprocessing.json", preprocessing_json(inputs.preprocessing))
        write_report(rows, folder, decision)
        if writer is not None:
            log_tensorboard(writer, rows, step, decision)
    return rows, decision
