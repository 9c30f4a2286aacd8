"""What a decision is asked for, checked: the accuracy budget, the objective, the byte budget; how a row's bytes are
counted and written; and how sure an accuracy delta is (its interval from the paired outcomes). Pure functions,
shared by the recommendation and the size-accuracy frontier."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from scipy.stats import beta, binom

# Accuracies are ratios of counts: 89.5 % - 90 % is -0.5000000000000004 points. A budget is met
# within this slack, far below one sample of any evaluation set (1e-9 points = 1 in 1e11).
SLACK_POINTS = 1e-9
LATENCY = re.compile(r"latency_bs([1-9][0-9]*)")
# Objectives measured in bytes: the row key, then the words for a lower and a higher value. ``size`` counts what
# ships (artifact + preprocessing, :func:`shipped`) where rows carry it.
BYTES = {"size": ("shipped_bytes", "smaller", "larger"), "memory": ("memory_bytes", "less memory", "more memory")}
ACCURACY = "accuracy"
CONFIDENCE = 0.95
# How the budget reads a validation delta: ``interval`` rejects a row only when its whole 95 % interval lies below
# -budget (over it with >= 97.5 % one-sided confidence); ``point`` compares the point estimate, as before.
RULES = ("interval", "point")
RULE_LINE = {
    "interval": "a row is over budget only when its whole 95 % validation interval lies below -{budget:g} points",
    "point": "a row is over budget when its validation delta is below -{budget:g} points",
}
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
    """The batch size a ``latency_bs<N>`` objective times (``None`` for ``size``, ``memory`` and ``accuracy``),
    refused in one line when the string is none of them or, given the measured ``batch_sizes``, ``N`` is not one.

    >>> check_objective("size"), check_objective("accuracy"), check_objective("latency_bs256", [1, 256])
    (None, None, 256)
    >>> check_objective("latency_bs64", [1, 256])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Expected `objective` to be size, memory, accuracy or latency_bs<N>, N a measured batch size (1, ...
    """
    if objective in BYTES or objective == ACCURACY:
        return None
    match = LATENCY.fullmatch(objective) if isinstance(objective, str) else None
    if match is None:
        raise ValueError(
            "Expected `objective` to be size, memory, accuracy, latency_bs1 or latency_bs<N> (N a measured batch "
            f"size), got {objective!r}."
        )
    batch_size = int(match.group(1))
    if batch_sizes is not None and batch_size not in batch_sizes:
        measured = ", ".join(map(str, batch_sizes))
        raise ValueError(
            "Expected `objective` to be size, memory, accuracy or latency_bs<N>, N a measured batch size "
            f"({measured}), got {objective!r}."
        )
    return batch_size


def check_max_bytes(max_bytes: Any) -> int | None:
    """A byte budget: ``None`` or an integer >= 1, refused in one line otherwise.

    >>> check_max_bytes(460_800), check_max_bytes(None)
    (460800, None)
    >>> check_max_bytes(0)
    Traceback (most recent call last):
    ...
    ValueError: Expected `max_bytes` an integer number of bytes >= 1 (e.g. 460800 for 450 KB) or null, got 0.
    """
    if max_bytes is None:
        return None
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
        raise ValueError(
            f"Expected `max_bytes` an integer number of bytes >= 1 (e.g. 460800 for 450 KB) or null, got {max_bytes!r}."
        )
    return max_bytes


def shipped(row: Row) -> int:
    """The bytes a bundle of the row ships (``shipped_bytes``: artifact + preprocessing), else its artifact's."""
    return int(row.get("shipped_bytes", row["size_bytes"]))


def human_bytes(size_bytes: float) -> str:
    """``900 B``, ``11.0 KB``, ``2.41 MB`` (binary units).

    >>> human_bytes(900), human_bytes(11_264), human_bytes(2_527_068)
    ('900 B', '11.0 KB', '2.41 MB')
    """
    if size_bytes < 1024:
        return f"{size_bytes:.0f} B"
    if size_bytes < 1024**2:
        return f"{size_bytes / 1024:.1f} KB"
    return f"{size_bytes / 1024**2:.2f} MB"


def paired_interval(gained: int, lost: int, examples: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """The ``confidence`` interval, in points, of a row's accuracy change against fp32 on the same ``examples``:
    ``gained`` examples it gets right and fp32 wrong, ``lost`` the reverse (the discordant pairs; the rest agree on
    correctness and say nothing about the difference).

    Exact and conditional on the ``d = gained + lost`` discordant pairs (McNemar's setting): the delta is
    ``d / examples * (2p - 1)`` points x 100, ``p`` the share of discordant pairs the row wins, and ``p`` gets its
    Clopper-Pearson interval from beta quantiles. No disagreement gives ``(0, 0)``.

    >>> low, high = paired_interval(0, 10, 1000)  # lost 10 of 1,000: -1 point, p in [0, 1 - 0.025 ** (1/10)]
    >>> round(low, 4), round(high, 4)
    (-1.0, -0.383)
    """
    discordant = gained + lost
    if discordant == 0:
        return 0.0, 0.0
    tail = (1 - confidence) / 2
    low = float(beta.ppf(tail, gained, lost + 1)) if gained else 0.0
    high = float(beta.ppf(1 - tail, gained + 1, lost)) if lost else 1.0
    scale = 100 * discordant / examples
    return scale * (2 * low - 1), scale * (2 * high - 1)


def confidence_below(gained: int, lost: int, examples: int, points: float) -> float:
    """How sure the paired outcomes make us that the accuracy change is below ``points`` (one-sided, exact on the
    discordant pairs): ``1 - P(X <= gained)``, ``X ~ Binomial(d, p0)``, ``p0`` the win share at which the change is
    exactly ``points``.

    >>> round(confidence_below(0, 10, 1000, -0.5), 4)  # p0 = 0.25: 1 - 0.75 ** 10
    0.9437
    >>> confidence_below(5, 5, 1000, -2.0)  # 10 disagreements cannot lose 2 points of 1,000
    0.0
    """
    discordant = gained + lost
    if discordant == 0:
        return 1.0 if points > 0 else 0.0
    p0 = (1 + points * examples / (100 * discordant)) / 2
    if p0 <= 0:
        return 0.0
    if p0 >= 1:
        return 1.0
    return float(1 - binom.cdf(gained, discordant, p0))


def examples_to_resolve(half_width: float, examples: int, budget: float) -> int:
    """About how many validation examples would make an interval of ``half_width`` points (at ``examples``) as narrow
    as the budget, at the same disagreement rate (the half-width shrinks as ``1 / sqrt(n)``).

    >>> examples_to_resolve(0.9, 2314, 0.5)
    7498
    """
    return math.ceil(examples * (half_width / budget) ** 2) if budget > 0 else 0


def check_rule(rule: Any) -> str:
    """The budget rule, refused in one line unless one of :data:`RULES`."""
    if rule not in RULES:
        raise ValueError(f"Expected `rule` to be one of ({', '.join(RULES)}), got {rule!r}.")
    return rule


def over_budget_on_validation(row: Row, budget: float, rule: str = "interval") -> bool:
    """Whether ``row`` is over ``budget`` points on validation under ``rule`` (:data:`RULES`); a row without an
    interval (``val_accuracy_delta_ci``) is read by its point estimate."""
    interval = row.get("val_accuracy_delta_ci")
    if rule == "interval" and interval is not None:
        return interval[1] < -budget - SLACK_POINTS
    return row["val_accuracy_delta"] < -budget - SLACK_POINTS


def interval_words(row: Row, split: str = "val") -> str:
    """``95 % interval -1.30 to -0.50`` (or ``..., indistinguishable from fp32`` when it holds 0), or ``""`` without
    one."""
    interval = row.get("val_accuracy_delta_ci" if split == "val" else "accuracy_delta_ci")
    if interval is None:
        return ""
    low, high = interval
    same = ", indistinguishable from fp32" if low <= 0 <= high else ""
    return f"95 % interval {low:+.2f} to {high:+.2f}{same}"


def confidence_over(row: Row, budget: float) -> float | None:
    """How sure validation makes us that ``row`` loses more than ``budget`` points (one-sided), or ``None`` without
    its paired outcomes."""
    paired = row.get("paired", {}).get("val")
    return None if paired is None else confidence_below(points=-budget, **paired)
