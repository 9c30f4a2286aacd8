"""What a decision is asked for, checked: the accuracy budget, the objective, the byte budget; and how a row's
bytes are counted and written. Pure functions, shared by the recommendation and the size-accuracy frontier."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

# Accuracies are ratios of counts: 89.5 % - 90 % is -0.5000000000000004 points. A budget is met
# within this slack, far below one sample of any evaluation set (1e-9 points = 1 in 1e11).
SLACK_POINTS = 1e-9
LATENCY = re.compile(r"latency_bs([1-9][0-9]*)")
# Objectives measured in bytes: the row key, then the words for a lower and a higher value. ``size`` counts what
# ships (artifact + preprocessing, :func:`shipped`) where rows carry it.
BYTES = {"size": ("shipped_bytes", "smaller", "larger"), "memory": ("memory_bytes", "less memory", "more memory")}
ACCURACY = "accuracy"
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
