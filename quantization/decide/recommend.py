"""Pick the artifact to ship from report rows: the best on one objective (size, memory held at run time, or
latency at a measured batch size) among the methods within an accuracy budget of fp32 on the validation split,
with the reason and every runner-up's "why not" in words.

Pure functions on the rows :mod:`quantization.measure.rows` writes, plus ``val_accuracy_delta`` (points vs fp32
on validation), as Neural Compressor's accuracy criterion + objective do, decided from measured artifacts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quantization.decide.frontier import most_accurate
from quantization.decide.objectives import (
    ACCURACY,
    BYTES,
    RULE_LINE,
    SLACK_POINTS,
    check_max_accuracy_drop,
    check_max_bytes,
    check_objective,
    check_rule,
    confidence_over,
    examples_to_resolve,
    human_bytes,
    interval_words,
    over_budget_on_validation,
    shipped,
)
from quantization.registry import BASELINE

__all__ = ["SLACK_POINTS", "check_max_accuracy_drop", "check_max_bytes", "check_objective", "recommend"]
Row = Mapping[str, Any]


def recommend(
    rows: Sequence[Row],
    max_accuracy_drop: float,
    objective: str,
    max_bytes: int | None = None,
    rule: str = "interval",
) -> dict[str, Any]:
    """The row to ship: best on ``objective`` among rows within ``max_accuracy_drop`` points of fp32 on
    validation, if better than fp32 on it; else fp32. ``rule`` says how a delta is read against the budget:
    ``interval`` (rows carry ``val_accuracy_delta_ci``): over budget only when the whole 95 % interval lies below
    ``-max_accuracy_drop``, so noise alone never rejects a row; ``point``: the point estimate alone. Rows without
    intervals are read by the point estimate.

    Lower is better: the shipped bytes (artifact + preprocessing, ``shipped_bytes``; else ``size_bytes``) for
    ``size``, ``memory_bytes`` for ``memory``, the median of ``latency_ms[N]`` for ``latency_bs<N>``; higher
    validation accuracy for ``accuracy``, where the budget does not filter (the most accurate row, whatever it
    loses). Ties go to the smaller artifact, then to the higher validation accuracy.

    ``max_bytes`` leaves out every row that ships more. With ``accuracy`` that is the most accurate model under a
    byte budget (:func:`quantization.decide.frontier.most_accurate`); with another objective, fp32 stays the
    fallback only if it fits, else the most accurate row that fits is recommended; with no row that fits, no
    recommendation (``method`` ``None``) and a reason naming the smallest row.

    Args:
        rows: Report rows (``method``, ``size_bytes``, ``latency_ms``, ``val_accuracy_delta``), fp32 among them.
        max_accuracy_drop: The budget, in accuracy points on the validation split.
        objective: ``size`` (the bytes that ship), ``memory`` (the bytes its loaded model holds), ``accuracy``,
            ``latency_bs1`` or ``latency_bs<N>`` for a measured batch size ``N``.
        max_bytes: The most bytes the recommended row may ship, or ``None``.
        rule: ``interval`` or ``point`` (above).

    Returns:
        ``{method, objective, max_accuracy_drop, max_bytes, rule, reason, resolution, runners_up: [{method,
        why_not}]}``, runners-up ordered best first on the objective; ``rule`` is the budget rule in one line,
        ``resolution`` says when validation is too small to resolve the budget (else ``""``).

    >>> def row(method, size_bytes, ms, val):
    ...     return {"method": method, "size_bytes": size_bytes, "latency_ms": {"1": {"median": ms}},
    ...             "val_accuracy_delta": val}
    >>> rows = [row("fp32", 40_960, 0.789, 0.0), row("int8", 11_264, 0.092, -0.04), row("int4", 6_144, 0.05, -0.9)]
    >>> result = recommend(rows, 0.5, "latency_bs1")
    >>> print(result["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int8: 8.6x faster than fp32 at batch 1 (0.092 vs 0.789 ms) and 3.6x smaller,
    -0.04 points on validation (budget 0.5). Over budget, and so left out though better on the objective: int4 (-0.90).
    >>> for runner_up in result["runners_up"]:
    ...     print(f"{runner_up['method']}: {runner_up['why_not']}")
    int4: over budget by 0.40 points (-0.90 on validation)
    fp32: 8.6x slower at batch 1 (0.789 vs 0.092 ms)
    >>> print(recommend(rows, 0.5, "size")["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int8: 3.6x smaller than fp32 (11.0 KB vs 40.0 KB) and 8.6x faster at batch 1,
    -0.04 points on validation (budget 0.5). Over budget, and so left out though better on the objective: int4 (-0.90).
    >>> print(recommend(rows, 0.01, "size")["reason"])
    fp32: every method loses more than 0.01 points on validation (closest: int8, -0.04).
    >>> print(recommend(rows, 0.5, "accuracy", max_bytes=8_192)["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int4: the most accurate of the 1 rows that ship at most 8.0 KB (6.0 KB, 6.7x fewer than fp32),
    -0.90 points on validation (budget 0.5: over it, and so is every row that fits). max_bytes (8.0 KB) leaves out
    2 of 3 rows, fp32 among them (40.0 KB).
    >>> print(recommend(rows, 0.5, "latency_bs1", max_bytes=12_000)["runners_up"][1]["why_not"])
    ships more than max_bytes (40.0 KB vs 11.7 KB)
    >>> rows = [r | {"memory_bytes": m} for r, m in zip(rows, (40_960, 40_960, 6_144))]
    >>> print(recommend(rows, 0.5, "memory")["reason"])  # doctest: +NORMALIZE_WHITESPACE
    fp32: 1 of 2 methods lose more than 0.5 points on validation and int8, the only one within budget,
    is not lighter than fp32 (40.0 KB held).
    >>> rows[1] = rows[1] | {"memory_bytes": 11_264}
    >>> print(recommend(rows, 0.5, "memory")["reason"])  # doctest: +NORMALIZE_WHITESPACE
    int8: 3.6x less memory than fp32 (11.0 KB vs 40.0 KB held) and 3.6x smaller, 8.6x faster at batch 1,
    -0.04 points on validation (budget 0.5). Over budget, and so left out though better on the objective: int4 (-0.90).
    """
    budget = check_max_accuracy_drop(max_accuracy_drop)
    max_bytes = check_max_bytes(max_bytes)
    rule = check_rule(rule)
    if not any("val_accuracy_delta_ci" in row for row in rows):
        rule = "point"  # nothing to read an interval from
    baseline = _baseline(rows)
    batch_size = check_objective(objective, [int(n) for n in baseline.get("latency_ms", {})])
    for row in rows:
        _check_val_delta(row)
        if objective == "memory" and not row.get("memory_bytes"):
            raise ValueError(f"Expected row {row.get('method')!r} to have `memory_bytes` for objective {objective!r}.")

    def value(row: Row) -> float:
        if objective == ACCURACY:
            return -row["val_accuracy_delta"]
        if batch_size is None:
            return _bytes_of(row, objective)
        return row["latency_ms"][str(batch_size)]["median"]

    def rank(row: Row) -> tuple[float, int, float]:
        return value(row), shipped(row), -row["val_accuracy_delta"]

    def fits(row: Row) -> bool:
        return max_bytes is None or shipped(row) <= max_bytes

    def beats_fp32(row: Row) -> bool:
        # Latency must win beyond timing noise: the row's p90 under fp32's median (a 10 us model at batch
        # 1 on a loaded machine otherwise "wins" by the luck of one run).
        if batch_size is None:
            return value(row) < value(baseline)
        timing = row["latency_ms"][str(batch_size)]
        return timing.get("p90", timing["median"]) < value(baseline)

    def over(row: Row) -> bool:
        return row is not baseline and over_budget_on_validation(row, budget, rule)

    within = [row for row in rows if not over(row) and fits(row)]
    contenders = [row for row in within if row is not baseline and (beats_fp32(row) or not fits(baseline))]
    chosen: Row | None
    if objective == ACCURACY or (not contenders and not fits(baseline)):
        chosen, reason = most_accurate(rows, budget, max_bytes, rule)
    elif contenders:
        chosen = min(contenders, key=rank)
        reason = _reason(chosen, baseline, budget, objective, batch_size)
    else:
        chosen = baseline
        reason = _fp32_reason([r for r in rows if fits(r)], within, baseline, budget, objective, batch_size, value)
    if chosen is not None:
        reason += _exclusions(rows, chosen, baseline, max_bytes, fits, over, rank)
    others = sorted((row for row in rows if row is not chosen), key=rank)
    return {
        "method": None if chosen is None else chosen["method"],
        "objective": objective,
        "max_accuracy_drop": budget,
        "max_bytes": max_bytes,
        "rule": RULE_LINE[rule].format(budget=budget),
        "reason": reason,
        "resolution": _resolution(rows, budget),
        "runners_up": [
            {
                "method": r["method"],
                "why_not": (
                    f"ships more than max_bytes ({human_bytes(shipped(r))} vs {human_bytes(max_bytes)})"
                    if not fits(r)
                    else _why_not(r, chosen, budget, objective, batch_size, beats_fp32(r), over(r))
                ),
            }
            for r in others
        ],
    }


def _exclusions(
    rows: Sequence[Row],
    chosen: Row,
    baseline: Row,
    max_bytes: int | None,
    fits: Callable[[Row], bool],
    over: Callable[[Row], bool],
    rank: Callable[[Row], tuple],
) -> str:
    """The exclusions that shaped the choice, as sentences: the rows ``max_bytes`` leaves out (fp32 named when it is
    one of them) and the rows over budget that would otherwise rank above a chosen method."""
    words = ""
    left_out = [row for row in rows if not fits(row)]
    if left_out and max_bytes is not None:
        fp32 = f", fp32 among them ({human_bytes(shipped(baseline))})" if baseline in left_out else ""
        words += f" max_bytes ({human_bytes(max_bytes)}) leaves out {len(left_out)} of {len(rows)} rows{fp32}."
    better = [row for row in rows if over(row) and fits(row) and rank(row) < rank(chosen)]
    if chosen is baseline:  # its reason already says why nothing else was within budget
        better = []
    if better:
        names = ", ".join(f"{row['method']} ({row['val_accuracy_delta']:+.2f})" for row in better)
        words += f" Over budget, and so left out though better on the objective: {names}."
    return words


def _resolution(rows: Sequence[Row], budget: float) -> str:
    """One line when some rows' 95 % validation interval is wider (half-width) than the budget: how many, and about
    how many validation examples would narrow the widest to the budget; ``""`` otherwise."""
    wide = []
    for row in rows:
        interval, paired = row.get("val_accuracy_delta_ci"), row.get("paired", {}).get("val")
        if interval is not None and paired is not None and (interval[1] - interval[0]) / 2 > budget:
            wide.append(((interval[1] - interval[0]) / 2, paired["examples"]))
    if not wide:
        return ""
    half, examples = max(wide)
    needed = examples_to_resolve(half, examples, budget)
    return (
        f"Validation cannot resolve a {budget:g}-point budget for {len(wide)} of {len(rows)} rows: their 95 % "
        f"intervals are up to +/-{half:.2f} points wide on {examples:,} examples; about {needed:,} validation "
        "examples would resolve them all."
    )


def _bytes_of(row: Row, objective: str) -> int:
    """The bytes a byte objective compares: what ships for ``size``, what the loaded model holds for ``memory``."""
    return shipped(row) if objective == "size" else row["memory_bytes"]


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
    interval = interval_words(chosen)
    accuracy = f"{chosen['val_accuracy_delta']:+.2f} points on validation ({f'{interval}; ' if interval else ''}"
    accuracy += f"budget {budget:g})"
    smaller = _times(shipped(baseline) / shipped(chosen), "smaller", "larger")
    if batch_size is None:
        _, lower, higher = BYTES[objective]
        held = " held" if objective == "memory" else " shipped" if "shipped_bytes" in chosen else ""
        mine, theirs = _bytes_of(chosen, objective), _bytes_of(baseline, objective)
        sizes = f"({human_bytes(mine)} vs {human_bytes(theirs)}{held})"
        first = min(baseline.get("latency_ms", {}), key=int, default=None)
        timed = first is not None and first in chosen.get("latency_ms", {})
        speed = f"{_speed(chosen, baseline, int(first))} at batch {first}" if timed else ""
        also = ", ".join(filter(None, [smaller if objective == "memory" else "", speed]))
        better = _times(theirs / mine, lower, higher)
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
        f"{human_bytes(value(baseline))}{held}"
        if batch_size is None
        else f"{_ms(value(baseline))} ms at batch {batch_size}"
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
    row: Row,
    chosen: Row | None,
    budget: float,
    objective: str,
    batch_size: int | None,
    clearly_faster: bool = True,
    over: bool = False,
) -> str:
    """One clause: over budget (by how much and, with paired outcomes, how surely), worse on the objective, or lost
    a tie (larger, then less accurate)."""
    delta = row["val_accuracy_delta"]
    if over and objective != ACCURACY:
        interval = interval_words(row)
        sure = confidence_over(row, budget)
        how = f", {interval}" if interval else ""
        if sure is not None:
            how += f"; below -{budget:g} with {f'{100 * sure:.1f} %' if sure < 0.9995 else 'over 99.9 %'} confidence"
        return f"over budget by {-delta - budget:.2f} points ({delta:+.2f} on validation{how})"
    if chosen is None:
        return "not recommended"
    if objective == ACCURACY:
        mine, theirs = -delta, -chosen["val_accuracy_delta"]
        worse, equal = "less accurate", "as accurate"
        figures = f"({delta:+.2f} vs {chosen['val_accuracy_delta']:+.2f} points on validation)"
    elif batch_size is None:
        _, lower, higher = BYTES[objective]
        mine, theirs = _bytes_of(row, objective), _bytes_of(chosen, objective)
        worse, equal = _times(theirs / mine, lower, higher), "as small" if objective == "size" else "as light"
        figures = f"({human_bytes(mine)} vs {human_bytes(theirs)})"
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
    if shipped(row) != shipped(chosen):
        return f"{equal}, larger ({human_bytes(shipped(row))} vs {human_bytes(shipped(chosen))})"
    if delta != chosen["val_accuracy_delta"]:
        return f"{equal} and as small, less accurate ({delta:+.2f} vs {chosen['val_accuracy_delta']:+.2f} points)"
    return f"tied with {chosen['method']} on every count, listed first"
