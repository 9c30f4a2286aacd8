"""Pick the artifact to ship from report rows: the best on one objective (size, memory held at run time, or
latency at a measured batch size) among the methods within an accuracy budget of fp32 on the validation split,
with the reason and every runner-up's "why not" in words.

Pure functions on the rows :mod:`quantization.measure` writes, plus ``val_accuracy_delta`` (points vs fp32
on validation), as Neural Compressor's accuracy criterion + objective do, decided from measured artifacts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quantization.registry import BASELINE

# Accuracies are ratios of counts: 89.5 % - 90 % is -0.5000000000000004 points. A budget is met
# within this slack, far below one sample of any evaluation set (1e-9 points = 1 in 1e11).
SLACK_POINTS = 1e-9
_LATENCY = re.compile(r"latency_bs([1-9][0-9]*)")
# Objectives measured in bytes: the row key, then the words for a lower and a higher value.
_BYTES = {"size": ("size_bytes", "smaller", "larger"), "memory": ("memory_bytes", "less memory", "more memory")}
Row = Mapping[str, Any]


def check_max_accuracy_drop(max_accuracy_drop: Any) -> float:
    """The budget in accuracy points, refused in one line unless a finite number >= 0.

    >>> check_max_accuracy_drop(0.5)
    0.5
    >>> check_max_accuracy_drop(-1)
    Traceback (most recent call last):
    ...
    ValueError: Expected `max_accuracy_drop` to be a finite number of accuracy points >= 0, got -1.
    """
    number = isinstance(max_accuracy_drop, (int, float)) and not isinstance(max_accuracy_drop, bool)
    if not number or not math.isfinite(max_accuracy_drop) or max_accuracy_drop < 0:
        raise ValueError(
            f"Expected `max_accuracy_drop` to be a finite number of accuracy points >= 0, got {max_accuracy_drop!r}."
        )
    return float(max_accuracy_drop)


def check_objective(objective: Any, batch_sizes: Sequence[int] | None = None) -> int | None:
    """The batch size a ``latency_bs<N>`` objective times (``None`` for ``size`` and ``memory``), refused in
    one line when the string is none of them or, given the measured ``batch_sizes``, ``N`` is not one of them.

    >>> check_objective("size"), check_objective("memory"), check_objective("latency_bs256", [1, 256])
    (None, None, 256)
    >>> check_objective("latency_bs64", [1, 256])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Expected `objective` to be size, memory or latency_bs<N>, N a measured batch size (1, 256), got ...
    """
    if objective in _BYTES:
        return None
    match = _LATENCY.fullmatch(objective) if isinstance(objective, str) else None
    if match is None:
        raise ValueError(
            "Expected `objective` to be size, memory, latency_bs1 or latency_bs<N> (N a measured batch size), "
            f"got {objective!r}."
        )
    batch_size = int(match.group(1))
    if batch_sizes is not None and batch_size not in batch_sizes:
        measured = ", ".join(map(str, batch_sizes))
        raise ValueError(
            f"Expected `objective` to be size, memory or latency_bs<N>, N a measured batch size ({measured}), "
            f"got {objective!r}."
        )
    return batch_size


def recommend(rows: Sequence[Row], max_accuracy_drop: float, objective: str) -> dict[str, Any]:
    """The row to ship: best on ``objective`` among rows within ``max_accuracy_drop`` points of fp32 on
    validation (``val_accuracy_delta >= -max_accuracy_drop``), if better than fp32 on it; else fp32.

    Lower is better: ``size_bytes`` for ``size``, ``memory_bytes`` for ``memory``, the median of ``latency_ms[N]``
    for ``latency_bs<N>``.
    Ties go to the smaller artifact, then to the higher validation accuracy.

    Args:
        rows: Report rows (``method``, ``size_bytes``, ``latency_ms``, ``val_accuracy_delta``), fp32 among them.
        max_accuracy_drop: The budget, in accuracy points on the validation split.
        objective: ``size`` (the artifact's bytes), ``memory`` (the bytes its loaded model holds), ``latency_bs1``
            or ``latency_bs<N>`` for a measured batch size ``N``.

    Returns:
        ``{method, objective, max_accuracy_drop, reason, runners_up: [{method, why_not}]}``, runners-up
        ordered best first on the objective.

    >>> def row(method, size_bytes, ms, val):
    ...     return {"method": method, "size_bytes": size_bytes, "latency_ms": {"1": {"median": ms}},
    ...             "val_accuracy_delta": val}
    >>> rows = [row("fp32", 40_960, 0.789, 0.0), row("int8", 11_264, 0.092, -0.04), row("int4", 6_144, 0.05, -0.9)]
    >>> result = recommend(rows, 0.5, "latency_bs1")
    >>> print(result["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int8: 8.6x faster than fp32 at batch 1 (0.092 vs 0.789 ms) and 3.6x smaller,
    -0.04 points on validation (budget 0.5).
    >>> for runner_up in result["runners_up"]:
    ...     print(f"{runner_up['method']}: {runner_up['why_not']}")
    int4: over budget by 0.40 points (-0.90 on validation)
    fp32: 8.6x slower at batch 1 (0.789 vs 0.092 ms)
    >>> print(recommend(rows, 0.5, "size")["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int8: 3.6x smaller than fp32 (11.0 KB vs 40.0 KB) and 8.6x faster at batch 1,
    -0.04 points on validation (budget 0.5).
    >>> print(recommend(rows, 0.01, "size")["reason"])
    fp32: every method loses more than 0.01 points on validation (closest: int8, -0.04).
    >>> rows = [r | {"memory_bytes": m} for r, m in zip(rows, (40_960, 40_960, 6_144))]
    >>> print(recommend(rows, 0.5, "memory")["reason"])  # doctest: +NORMALIZE_WHITESPACE
    fp32: 1 of 2 methods lose more than 0.5 points on validation and int8, the only one within budget,
    is not lighter than fp32 (40.0 KB held).
    >>> rows[1] = rows[1] | {"memory_bytes": 11_264}
    >>> print(recommend(rows, 0.5, "memory")["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int8: 3.6x less memory than fp32 (11.0 KB vs 40.0 KB held) and 3.6x smaller, 8.6x faster at batch 1,
    -0.04 points on validation (budget 0.5).
    """
    budget = check_max_accuracy_drop(max_accuracy_drop)
    baseline = _baseline(rows)
    batch_size = check_objective(objective, [int(n) for n in baseline.get("latency_ms", {})])
    key = _BYTES[objective][0] if batch_size is None else None
    for row in rows:
        _check_val_delta(row)
        if key is not None and not row.get(key):
            raise ValueError(f"Expected row {row.get('method')!r} to have `{key}` for objective {objective!r}.")

    def value(row: Row) -> float:
        return row[key] if key is not None else row["latency_ms"][str(batch_size)]["median"]

    def rank(row: Row) -> tuple[float, int, float]:
        return value(row), row["size_bytes"], -row["val_accuracy_delta"]

    def beats_fp32(row: Row) -> bool:
        # Latency must win beyond timing noise: the row's p90 under fp32's median (a 10 us model at batch
        # 1 on a loaded machine otherwise "wins" by the luck of one run).
        if batch_size is None:
            return value(row) < value(baseline)
        timing = row["latency_ms"][str(batch_size)]
        return timing.get("p90", timing["median"]) < value(baseline)

    within = [row for row in rows if row is baseline or row["val_accuracy_delta"] >= -budget - SLACK_POINTS]
    contenders = [row for row in within if row is not baseline and beats_fp32(row)]
    chosen = min(contenders, key=rank) if contenders else baseline
    if chosen is baseline:
        reason = _fp32_reason(rows, within, baseline, budget, objective, batch_size, value)
    else:
        reason = _reason(chosen, baseline, budget, objective, batch_size)
    others = sorted((row for row in rows if row is not chosen), key=rank)
    return {
        "method": chosen["method"],
        "objective": objective,
        "max_accuracy_drop": budget,
        "reason": reason,
        "runners_up": [
            {"method": r["method"], "why_not": _why_not(r, chosen, budget, objective, batch_size, beats_fp32(r))}
            for r in others
        ],
    }


def _baseline(rows: Sequence[Row]) -> Row:
    found = [row for row in rows if row.get("method") == BASELINE]
    if not found:
        methods = ", ".join(str(row.get("method")) for row in rows)
        raise ValueError(f"Expected the report rows to include the {BASELINE} baseline, got ({methods}).")
    return found[0]


def _check_val_delta(row: Row) -> None:
    delta = row.get("val_accuracy_delta")
    if not isinstance(delta, (int, float)) or isinstance(delta, bool) or not math.isfinite(delta):
        raise ValueError(
            f"Expected row {row.get('method')!r} to have a finite `val_accuracy_delta` (points vs fp32 on the "
            f"validation split), got {delta!r}."
        )


def _size(size_bytes: float) -> str:
    """``900 B``, ``11.0 KB``, ``2.41 MB`` (binary units)."""
    if size_bytes < 1024:
        return f"{size_bytes:.0f} B"
    if size_bytes < 1024**2:
        return f"{size_bytes / 1024:.1f} KB"
    return f"{size_bytes / 1024**2:.2f} MB"


def _ms(ms: float) -> str:
    return f"{ms:.3f}" if ms < 10 else f"{ms:.1f}"


def _times(ratio: float, better: str, worse: str) -> str:
    """``3.6x smaller`` for a ratio above 1, ``1.2x larger`` below it."""
    return f"{ratio:.1f}x {better}" if ratio >= 1 else f"{1 / ratio:.1f}x {worse}"


def _speed(row: Row, baseline: Row, batch_size: int) -> str:
    key = str(batch_size)
    ratio = baseline["latency_ms"][key]["median"] / row["latency_ms"][key]["median"]
    return _times(ratio, "faster", "slower")


def _reason(chosen: Row, baseline: Row, budget: float, objective: str, batch_size: int | None) -> str:
    accuracy = f"{chosen['val_accuracy_delta']:+.2f} points on validation (budget {budget:g})"
    smaller = _times(baseline["size_bytes"] / chosen["size_bytes"], "smaller", "larger")
    if batch_size is None:
        key, lower, higher = _BYTES[objective]
        held = " held" if objective == "memory" else ""
        sizes = f"({_size(chosen[key])} vs {_size(baseline[key])}{held})"
        first = min(baseline.get("latency_ms", {}), key=int, default=None)
        timed = first is not None and first in chosen.get("latency_ms", {})
        speed = f"{_speed(chosen, baseline, int(first))} at batch {first}" if timed else ""
        also = ", ".join(filter(None, [smaller if objective == "memory" else "", speed]))
        better = _times(baseline[key] / chosen[key], lower, higher)
        return f"{chosen['method']}: {better} than fp32 {sizes}{f' and {also}' if also else ''}, {accuracy}."
    key = str(batch_size)
    times = f"({_ms(chosen['latency_ms'][key]['median'])} vs {_ms(baseline['latency_ms'][key]['median'])} ms)"
    faster = _speed(chosen, baseline, batch_size)
    return f"{chosen['method']}: {faster} than fp32 at batch {batch_size} {times} and {smaller}, {accuracy}."


def _fp32_reason(
    rows: Sequence[Row],
    within: list[Row],
    baseline: Row,
    budget: float,
    objective: str,
    batch_size: int | None,
    value: Callable[[Row], float],
) -> str:
    """Why nothing beats fp32: every method over budget, or none within it better on the objective."""
    others = [row for row in rows if row is not baseline]
    if not others:
        return "fp32: it is the only row measured."
    held = " held" if objective == "memory" else ""
    target = (
        f"{_size(value(baseline))}{held}" if batch_size is None else f"{_ms(value(baseline))} ms at batch {batch_size}"
    )
    better = {"size": "smaller", "memory": "lighter"}.get(objective, "clearly faster")  # p90 under fp32's median
    within_others = [row for row in within if row is not baseline]
    over = len(others) - len(within_others)
    if not within_others:
        closest = max(others, key=lambda row: row["val_accuracy_delta"])
        delta = f"{closest['method']}, {closest['val_accuracy_delta']:+.2f}"
        return f"fp32: every method loses more than {budget:g} points on validation (closest: {delta})."
    lost = f"{over} of {len(others)} methods lose more than {budget:g} points on validation and " if over else ""
    if len(within_others) == 1:
        only = within_others[0]["method"]
        return f"fp32: {lost}{only}, the only one within budget, is not {better} than fp32 ({target})."
    return f"fp32: {lost}none of the {len(within_others)} within budget is {better} than fp32 ({target})."


def _why_not(
    row: Row, chosen: Row, budget: float, objective: str, batch_size: int | None, clearly_faster: bool = True
) -> str:
    """One clause: over budget, worse on the objective, or lost a tie (larger, then less accurate)."""
    delta = row["val_accuracy_delta"]
    if delta < -budget - SLACK_POINTS:
        return f"over budget by {-delta - budget:.2f} points ({delta:+.2f} on validation)"
    if batch_size is None:
        key, lower, higher = _BYTES[objective]
        mine, theirs = row[key], chosen[key]
        worse, equal = _times(theirs / mine, lower, higher), "as small" if objective == "size" else "as light"
        figures = f"({_size(mine)} vs {_size(theirs)})"
    else:
        key = str(batch_size)
        mine, theirs = row["latency_ms"][key]["median"], chosen["latency_ms"][key]["median"]
        worse, equal = f"{_times(theirs / mine, 'faster', 'slower')} at batch {batch_size}", "as fast"
        figures = f"({_ms(mine)} vs {_ms(theirs)} ms)"
    if batch_size is not None and row["method"] != BASELINE and not clearly_faster and mine < theirs:
        p90 = row["latency_ms"][str(batch_size)].get("p90", mine)
        return f"faster by median ({_ms(mine)} ms) but its p90 ({_ms(p90)} ms) is not under fp32's median: noise"
    if mine != theirs:
        return f"{worse} {figures}"
    if row["size_bytes"] != chosen["size_bytes"]:
        return f"{equal}, larger ({_size(row['size_bytes'])} vs {_size(chosen['size_bytes'])})"
    if delta != chosen["val_accuracy_delta"]:
        return f"{equal} and as small, less accurate ({delta:+.2f} vs {chosen['val_accuracy_delta']:+.2f} points)"
    return f"tied with {chosen['method']} on every count, listed first"
