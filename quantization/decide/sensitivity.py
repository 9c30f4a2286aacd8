"""Which ``nn.Linear`` layers a method hurts, and the fewest to keep in fp32 for an accuracy budget.

:func:`layer_sensitivity` quantizes one layer at a time (every other kept fp32) and scores it by the
accuracy drop and the logits' SQNR against fp32, as Neural Compressor's ``basic`` strategy scores one op
at a time; :func:`fallback` then keeps the most sensitive layers in fp32 one by one, re-evaluating each
time, until the drop fits (as NNCF's accuracy control reverts its ranked groups).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from quantization.artifacts.onnx_runtime import dense
from quantization.candidates.swap import linear_layers
from quantization.decide.recommend import SLACK_POINTS, check_max_accuracy_drop
from quantization.measure.accuracy import evaluate
from quantization.measure.latency import Batch
from quantization.registry import BASELINE, METHODS, QuantizationData, check_methods


def sqnr_db(reference: torch.Tensor, logits: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio of ``logits`` against ``reference``, in dB:
    ``10 log10(sum reference^2 / sum (logits - reference)^2)``; ``inf`` when they are equal.

    Summed in float64, so a million logits lose nothing to the sums. 20 dB: the error's energy is 1 %
    of the logits'; each 6 dB halves its RMS (one more bit).

    >>> sqnr_db(torch.tensor([3.0, -4.0]), torch.tensor([3.0, -3.5]))  # 25 / 0.25
    20.0
    >>> sqnr_db(torch.ones(3), torch.ones(3))
    inf
    """
    noise = float((logits.double() - reference.double()).square().sum())
    signal = float(reference.double().square().sum())
    if noise == 0:
        return math.inf
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def _settings(method: str, settings: Any) -> Any:
    """The method's settings dataclass from itself, plain values or ``None`` (its defaults)."""
    check_methods([method])
    return METHODS[method].settings_of(settings)


def _dense(batches: Sequence[Batch]) -> list[Batch]:
    """The batches with dense inputs, as a deployed model receives them; converted once per ranking."""
    return [(dense(x), y) for x, y in batches]


def _run(
    model: nn.Module,
    method: str,
    settings: Any,
    data: QuantizationData,
    batches: Sequence[Batch],
    keep_fp32: Sequence[str],
    num_threads: int,
) -> tuple[torch.Tensor, float]:
    """Quantize ``model`` but ``keep_fp32``, load the artifact back from its bytes and evaluate it."""
    kept = dataclasses.replace(data, keep_fp32=frozenset(keep_fp32))
    artifact = METHODS[method].quantize(model, settings, kept)
    return evaluate(METHODS[method].load(artifact.data, model, num_threads), batches)  # batches: dense


def _reference(
    model: nn.Module, data: QuantizationData, batches: Sequence[Batch], num_threads: int
) -> tuple[torch.Tensor, float]:
    """The fp32 artifact's logits and accuracy: the baseline every report row is compared with."""
    return _run(model, BASELINE, METHODS[BASELINE].make_settings(), data, batches, (), num_threads)


def layer_sensitivity(
    model: nn.Module,
    method: str,
    settings: Any,
    data: QuantizationData,
    batches: Sequence[Batch],
    num_threads: int = 1,
) -> list[dict[str, Any]]:
    """How much ``method`` costs on each ``nn.Linear`` of ``model`` alone, in layer order.

    Each layer is quantized by itself (``keep_fp32`` = every other layer), its artifact loaded back
    (``METHODS[method].load``) and evaluated on ``batches`` against the fp32 artifact.

    Args:
        model: The fp32 model (only read).
        method: A registered method name.
        settings: The method's settings dataclass, plain values for it, or ``None`` for its defaults.
        data: Example and calibration batches, as for :func:`quantization.quantize` (its ``keep_fp32`` is ignored).
        batches: ``(x, y)`` evaluation batches, e.g. the validation split; ``x`` may be sparse.
        num_threads: Intra-op threads of the loaded artifacts.

    Returns:
        One row per layer: ``layer``, ``parameters`` (its weight count), ``accuracy``, ``accuracy_drop``
        (fp32's accuracy minus this one, in points: positive is worse) and ``sqnr_db`` of the logits.
    """
    settings, batches = _settings(method, settings), _dense(batches)
    layers = linear_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no nn.Linear layer to rank.")
    reference, reference_accuracy = _reference(model, data, batches, num_threads)
    rows = []
    for name, layer in layers.items():
        others = [other for other in layers if other != name]
        logits, accuracy = _run(model, method, settings, data, batches, others, num_threads)
        rows.append(
            {
                "layer": name,
                "parameters": layer.weight.numel(),
                "accuracy": accuracy,
                "accuracy_drop": (reference_accuracy - accuracy) * 100,
                "sqnr_db": sqnr_db(reference, logits),
            }
        )
    return rows


def most_sensitive_first(rows: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """:func:`layer_sensitivity` rows, the largest accuracy drop first, ties broken by the lowest SQNR
    (the most logit error), then by layer order.

    >>> rows = [{"layer": "0", "accuracy_drop": 0.5, "sqnr_db": 30.0}, {"layer": "2", "accuracy_drop": 0.5,
    ...         "sqnr_db": 18.0}, {"layer": "4", "accuracy_drop": 1.0, "sqnr_db": 40.0}]
    >>> [row["layer"] for row in most_sensitive_first(rows)]
    ['4', '2', '0']
    """
    return sorted(rows, key=lambda row: (-row["accuracy_drop"], row["sqnr_db"]))


def fallback(
    model: nn.Module,
    method: str,
    settings: Any,
    data: QuantizationData,
    batches: Sequence[Batch],
    max_accuracy_drop: float,
    sensitivity_rows: Sequence[Mapping[str, Any]],
    num_threads: int = 1,
) -> dict[str, Any]:
    """Keep the most sensitive layers in fp32, one more at a time, until ``method`` loses at most
    ``max_accuracy_drop`` points against fp32 on ``batches``.

    Greedy over :func:`most_sensitive_first` (ranked once, from ``sensitivity_rows``); each step is
    quantized, loaded back and evaluated. Keeping every layer is the fp32 model itself, so it is not a
    way to fit: when even all layers but one in fp32 lose too much, ``fits`` is ``False``, ``keep_fp32``
    lists every layer and the accuracy is fp32's (ship fp32, or pick another method).

    Args:
        model, method, settings, data, batches, num_threads: As :func:`layer_sensitivity`.
        max_accuracy_drop: The budget, in accuracy points (>= 0).
        sensitivity_rows: :func:`layer_sensitivity`'s rows for this model, method and settings.

    Returns:
        ``keep_fp32`` (the layers to keep, in the order they were kept), ``accuracy`` and ``accuracy_drop``
        of that configuration, ``fits``, ``kept_weight_fraction`` (share of the Linear weights kept fp32),
        ``tried`` (per step: ``keep_fp32``, ``accuracy``, ``accuracy_drop``) and a one-sentence ``summary``.
    """
    budget = check_max_accuracy_drop(max_accuracy_drop)
    settings, batches = _settings(method, settings), _dense(batches)
    layers = linear_layers(model)
    ranked = [row["layer"] for row in most_sensitive_first(sensitivity_rows)]
    if sorted(ranked) != sorted(layers):
        raise ValueError(
            f"Expected `sensitivity_rows` for the model's nn.Linear layers ({', '.join(map(repr, layers))}), "
            f"got ({', '.join(map(repr, ranked))})."
        )
    _, reference_accuracy = _reference(model, data, batches, num_threads)
    total = sum(layer.weight.numel() for layer in layers.values())
    tried = []
    for count in range(len(ranked)):  # all layers kept would be fp32 itself
        keep = ranked[:count]
        _, accuracy = _run(model, method, settings, data, batches, keep, num_threads)
        tried.append({"keep_fp32": keep, "accuracy": accuracy, "accuracy_drop": (reference_accuracy - accuracy) * 100})
        if tried[-1]["accuracy_drop"] <= budget + SLACK_POINTS:
            fraction = sum(layers[name].weight.numel() for name in keep) / total
            which = f" ({', '.join(keep)}: {fraction:.0%} of the weights)" if keep else ""
            summary = (
                f"{method} stays within {budget:g} points of fp32 ({-tried[-1]['accuracy_drop']:+.2f}) "
                f"with {count} of {len(ranked)} layers in fp32{which}."
            )
            return {**tried[-1], "fits": True, "kept_weight_fraction": fraction, "tried": tried, "summary": summary}
    last = tried[-1]
    summary = (
        f"{method} cannot stay within {budget:g} points of fp32 with any layer quantized: with "
        f"{len(last['keep_fp32'])} of {len(ranked)} layers in fp32 it still loses {last['accuracy_drop']:.2f} points; "
        "ship fp32 or another method."
    )
    return {
        "keep_fp32": ranked,
        "accuracy": reference_accuracy,
        "accuracy_drop": 0.0,
        "fits": False,
        "kept_weight_fraction": 1.0,
        "tried": tried,
        "summary": summary,
    }
