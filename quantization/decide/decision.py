"""From measured rows to a decision: per-layer sensitivity, fp32 fallback for the methods over the
accuracy budget (measured as ``<method>+fallback`` rows), and the recommended row.

The budget is checked on the validation split, each delta read with its 95 % interval from the paired outcomes
(``Budget.rule``); the test split stays the final, honest figure.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from quantization.candidates.swap import linear_layers
from quantization.decide.objectives import check_rule, over_budget_on_validation
from quantization.decide.recommend import check_max_accuracy_drop, check_max_bytes, check_objective, recommend
from quantization.decide.sensitivity import fallback, layer_sensitivity
from quantization.measure.rows import Batch, Candidate, Measured, MeasureSettings
from quantization.registry import BASELINE, METHODS, QuantizationData, check_methods

FALLBACK = "+fallback"


@dataclass(frozen=True)
class Budget:
    """What "good enough" means for a run, and what to optimize within it.

    Args:
        max_accuracy_drop: Points of validation accuracy a method may lose against fp32.
        objective: ``size``, ``memory``, ``latency_bs1`` or ``latency_bs<N>`` (a measured batch size).
        sensitivity: Methods whose per-layer sensitivity is reported even when within budget (those over
            it always get one, with the fallback it leads to).
        max_bytes: The most bytes the recommended row may ship (artifact + preprocessing), or ``None``.
        rule: How a validation delta is read against the budget: ``interval`` (over it only when the whole 95 %
            interval lies below ``-max_accuracy_drop``) or ``point`` (the point estimate alone).
    """

    max_accuracy_drop: float = 0.5
    objective: str = "latency_bs1"
    sensitivity: tuple[str, ...] = ()
    max_bytes: int | None = None
    rule: str = "interval"

    def __post_init__(self) -> None:
        check_max_accuracy_drop(self.max_accuracy_drop)
        check_objective(self.objective)
        check_methods(list(self.sensitivity))
        check_max_bytes(self.max_bytes)
        check_rule(self.rule)


def over_budget(row: dict[str, Any], budget: Budget) -> bool:
    """Whether a plain PTQ row is over the budget on validation, read by ``budget.rule``."""
    plain = row["method"] == row["base_method"] != BASELINE
    return plain and over_budget_on_validation(row, budget.max_accuracy_drop, budget.rule)


def plan_fallbacks(
    model: nn.Module,
    rows: Sequence[dict[str, Any]],
    val_batches: Sequence[Batch],
    data: QuantizationData,
    settings: MeasureSettings,
    budget: Budget,
) -> tuple[list[Candidate], dict[str, dict[str, Any]]]:
    """Per-layer sensitivity for the rows over the budget (and those ``budget.sensitivity`` names), and the
    ``<method>+fallback`` rows that bring a row within budget by keeping its most sensitive layers in fp32.

    Args:
        model: The fp32 model the rows were measured from (only read).
        rows: Rows with their validation accuracy delta (:func:`quantization.measure.rows.evaluate_candidates`).
        val_batches: The validation batches the budget is checked on.
        data: Example and calibration batches.
        settings: Threads for the sensitivity runs.
        budget: The accuracy budget and the methods to rank layers for.

    Returns:
        The fallback rows to measure, and ``{method: {"layers": [...], "fallback": {...}}}``.
    """
    sensitivity: dict[str, dict[str, Any]] = {}
    extra: list[Candidate] = []
    several_layers = len(linear_layers(model)) > 1
    for row in rows:
        method, over = row["base_method"], over_budget(row, budget)
        if not (over or (row["method"] == method and method in budget.sensitivity)):
            continue
        method_settings = METHODS[method].make_settings(row["settings"])
        layers = layer_sensitivity(model, method, method_settings, data, val_batches, settings.num_threads)
        entry: dict[str, Any] = {"layers": layers}
        if over and several_layers:
            found = fallback(
                model,
                method,
                method_settings,
                data,
                val_batches,
                budget.max_accuracy_drop,
                layers,
                settings.num_threads,
            )
            entry["fallback"] = found
            if found["fits"] and found["keep_fp32"]:
                info = {"kept_fp32": found["keep_fp32"], "kept_weight_fraction": found["kept_weight_fraction"]}
                keep = frozenset(found["keep_fp32"])
                extra.append(Candidate(method, method_settings, f"{method}{FALLBACK}", keep_fp32=keep, info=info))
        elif over:
            entry["fallback"] = {"fits": False, "summary": f"{method}: one Linear layer, so no layer can stay fp32."}
        sensitivity[row["method"]] = entry
    return extra, sensitivity


def with_fallbacks(measured: list[Measured], fallbacks: Sequence[Measured]) -> list[Measured]:
    """``measured`` with each fallback row right after its method's row."""
    rows = list(measured)
    for new in fallbacks:
        at = next(i for i, m in enumerate(rows) if m.row["method"] == new.row["base_method"]) + 1
        rows.insert(at, new)
    return rows


def decision_of(rows: Sequence[dict[str, Any]], sensitivity: dict[str, dict[str, Any]], budget: Budget) -> dict:
    """``{"recommendation": ..., "sensitivity": ...}`` for measured rows."""
    recommendation = recommend(list(rows), budget.max_accuracy_drop, budget.objective, budget.max_bytes, budget.rule)
    return {"recommendation": recommendation, "sensitivity": sensitivity}
