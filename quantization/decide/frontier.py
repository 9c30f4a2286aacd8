"""Size against accuracy: the bytes each row ships, the rows no other row beats on both (the frontier), and the
most accurate row under a byte budget (``max_bytes``).

A row's shipped bytes are what its bundle holds that the runtime reads: the artifact as shipped and its
``preprocessing.json`` (``quantization.measure.rows.shipped_bytes``; a text vocabulary can outweigh a small model).
Rows without them (no preprocessing known) count their artifact. Accuracy here is on the validation split, as every
decision is; the test split stays the final figure, shown beside it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from quantization.decide.objectives import human_bytes, interval_words, over_budget_on_validation, shipped
from quantization.registry import BASELINE

Row = Mapping[str, Any]


def on_frontier(rows: Sequence[Row]) -> list[bool]:
    """Per row, whether no other row ships as few bytes or fewer with at least its validation accuracy, one of the
    two strictly (ties on both: the first listed stays).

    >>> rows = [{"size_bytes": 100, "val_accuracy_delta": 0.0}, {"size_bytes": 40, "val_accuracy_delta": -0.2},
    ...         {"size_bytes": 50, "val_accuracy_delta": -0.5}, {"size_bytes": 10, "val_accuracy_delta": -1.0}]
    >>> on_frontier(rows)
    [True, True, False, True]
    """

    def beats(other: Row, row: Row) -> bool:
        smaller, better = shipped(other) <= shipped(row), other["val_accuracy_delta"] >= row["val_accuracy_delta"]
        strictly = shipped(other) < shipped(row) or other["val_accuracy_delta"] > row["val_accuracy_delta"]
        return smaller and better and strictly

    flags = []
    for i, row in enumerate(rows):
        same = any(
            shipped(o) == shipped(row) and o["val_accuracy_delta"] == row["val_accuracy_delta"] for o in rows[:i]
        )
        flags.append(not same and not any(beats(other, row) for other in rows if other is not row))
    return flags


def frontier_rows(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Every row, smallest shipped first: method, shipped / artifact (as shipped) / preprocessing bytes, validation
    and test accuracy change, and whether it is on the frontier (``report.json``'s ``frontier``)."""
    flags = on_frontier(rows)
    table = [
        {
            "method": row["method"],
            "shipped_bytes": shipped(row),
            "artifact_bytes": shipped(row) - row.get("preprocessing_bytes", 0),  # as shipped: fp32 as ONNX
            "preprocessing_bytes": row.get("preprocessing_bytes", 0),
            "val_accuracy_delta": row["val_accuracy_delta"],
            "accuracy_delta": row["accuracy_delta"],
            "on_frontier": flag,
        }
        for row, flag in zip(rows, flags, strict=True)
    ]
    return sorted(table, key=lambda r: (r["shipped_bytes"], -r["val_accuracy_delta"]))


def frontier_markdown(table: Sequence[Row]) -> str:
    """:func:`frontier_rows` as a Markdown table.

    >>> print(frontier_markdown([{"method": "fp32", "shipped_bytes": 3072, "artifact_bytes": 2048,
    ...     "preprocessing_bytes": 1024, "val_accuracy_delta": 0.0, "accuracy_delta": 0.0, "on_frontier": True}]))
    ... # doctest: +NORMALIZE_WHITESPACE
    ## Size and accuracy
    <BLANKLINE>
    Every row by the bytes its bundle ships (artifact + preprocessing.json; bundle.json and the model card are not
    counted); on the frontier: no other row ships fewer bytes with at least its validation accuracy.
    <BLANKLINE>
    | method | shipped (KB) | artifact (KB) | preprocessing (KB) | Δ val acc (points) | Δ test acc (points) | frontier |
    |---|---|---|---|---|---|---|
    | fp32 | 3.0 | 2.0 | 1.0 | +0.00 | +0.00 | yes |
    """
    lines = [
        "## Size and accuracy",
        "",
        "Every row by the bytes its bundle ships (artifact + preprocessing.json; bundle.json and the model card are "
        "not counted); on the frontier: no other row ships fewer bytes with at least its validation accuracy.",
        "",
        "| method | shipped (KB) | artifact (KB) | preprocessing (KB) | Δ val acc (points) | Δ test acc (points) "
        "| frontier |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in table:
        kb = [f"{row[key] / 1024:.1f}" for key in ("shipped_bytes", "artifact_bytes", "preprocessing_bytes")]
        deltas = [f"{row[key]:+.2f}" for key in ("val_accuracy_delta", "accuracy_delta")]
        cells = [row["method"], *kb, *deltas, "yes" if row["on_frontier"] else ""]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def frontier_figure(table: Sequence[Row]) -> Figure:
    """Accuracy change against shipped KB (log scale), every row: validation (the frontier joined by a line) and
    test side by side."""
    figure = Figure(figsize=(11, 4.5))
    figure.subplots_adjust(left=0.06, right=0.99, bottom=0.12, top=0.92, wspace=0.18)  # a constrained layout: 2x slower
    for ax, key, title in zip(
        figure.subplots(1, 2),
        ("val_accuracy_delta", "accuracy_delta"),
        ("validation (the frontier joined)", "test"),
        strict=True,
    ):
        kb = [row["shipped_bytes"] / 1024 for row in table]
        ax.scatter(kb, [row[key] for row in table], color=["C0" if r["on_frontier"] else "0.6" for r in table])
        front = [row for row in table if row["on_frontier"]]
        if key == "val_accuracy_delta":
            ax.plot([r["shipped_bytes"] / 1024 for r in front], [r[key] for r in front], color="C0")
        for row, x in zip(table, kb, strict=True):
            ax.annotate(row["method"], (x, row[key]), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("shipped (KB, artifact + preprocessing)")
        ax.set_ylabel("accuracy vs fp32 (points)")
        ax.set_title(title)
        ax.axhline(0.0, color="0.8", linewidth=0.8)
    return figure


def most_accurate(
    rows: Sequence[Row], budget: float, max_bytes: int | None, rule: str = "interval"
) -> tuple[Row | None, str]:
    """The row with the best validation accuracy among those that ship at most ``max_bytes`` (ties: fewer bytes),
    and one sentence of why (over the budget read by ``rule``, :func:`quantization.decide.objectives.
    over_budget_on_validation`); with none that fits, no row (``None``) and one sentence naming the smallest.

    >>> rows = [{"method": "fp32", "size_bytes": 9000, "val_accuracy_delta": 0.0},
    ...         {"method": "int4+prune", "size_bytes": 900, "val_accuracy_delta": -0.3},
    ...         {"method": "int2+prune", "size_bytes": 500, "val_accuracy_delta": -1.2}]
    >>> print(most_accurate(rows, 0.5, 1000)[1])  # doctest: +NORMALIZE_WHITESPACE
    int4+prune: the most accurate of the 2 rows that ship at most 1000 B (900 B, 10.0x fewer than fp32),
    -0.30 points on validation (budget 0.5).
    >>> print(most_accurate(rows, 0.5, 100))  # doctest: +NORMALIZE_WHITESPACE
    (None, 'No recommendation: no row ships at most 100 B; the smallest, int2+prune, ships 500 B.')
    """
    baseline = next((row for row in rows if row["method"] == BASELINE), None)
    fitting = [row for row in rows if max_bytes is None or shipped(row) <= max_bytes]
    if not fitting:
        smallest = min(rows, key=lambda row: (shipped(row), -row["val_accuracy_delta"]))
        return None, (
            f"No recommendation: no row ships at most {human_bytes(max_bytes)}; the smallest, {smallest['method']}, "
            f"ships {human_bytes(shipped(smallest))}."
        )
    chosen = max(fitting, key=lambda row: (row["val_accuracy_delta"], -shipped(row)))
    over = chosen is not baseline and over_budget_on_validation(chosen, budget, rule)
    accuracy = _accuracy(chosen, budget, ": over it, and so is every row that fits" if over else "")
    pool = f"the {len(fitting)} rows that ship at most {human_bytes(max_bytes)}" if max_bytes else "all rows"
    ratio = ""
    if baseline is not None and chosen is not baseline:
        ratio = f", {shipped(baseline) / shipped(chosen):.1f}x fewer than fp32"
    return (
        chosen,
        f"{chosen['method']}: the most accurate of {pool} ({human_bytes(shipped(chosen))}{ratio}), {accuracy}.",
    )


def _accuracy(row: Row, budget: float, note: str) -> str:
    interval = interval_words(row)
    interval = f"{interval}; " if interval else ""
    return f"{row['val_accuracy_delta']:+.2f} points on validation ({interval}budget {budget:g}{note})"
