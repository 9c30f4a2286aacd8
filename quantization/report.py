"""The quantization report as files (``report.json``, ``report.md``) and in TensorBoard.

TensorBoard gets per-method scalars ``quant/<method>/...``, the Markdown table as text, a bar
chart of size, accuracy and latency, and one HParams run per method for the HParams dashboard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from quantization.int8_overflow import INT16_MAX
from quantization.machine import describe, machine_info
from storage.atomic import atomic_write

Row = dict[str, Any]


def markdown_table(rows: Sequence[Row]) -> str:
    """All methods as a Markdown table (latency: median / p90 ms per batch, speedup vs fp32).

    >>> row = {"method": "fp32", "size_bytes": 2048, "size_ratio": 1.0, "accuracy": 0.9, "accuracy_delta": 0.0,
    ...        "agreement": 1.0, "latency_ms": {"1": {"median": 0.02, "p90": 0.03}}, "speedup": {"1": 1.0},
    ...        "slower_than_fp32": [], "threads": 1}
    >>> print(markdown_table([row]).splitlines()[2])
    | fp32 | 2.0 | 1.00x | 90.00 | +0.00 | 100.0 | 0.020 / 0.030 | 1.00x |  |
    """
    sizes = list(rows[0]["latency_ms"])
    header = ["method", "size (KB)", "fp32/size", "accuracy (%)", "Δ acc (points)", "agreement (%)"]
    header += [h for n in sizes for h in (f"latency bs{n} (ms, median / p90)", f"speedup bs{n}")]
    lines = ["| " + " | ".join([*header, "notes"]) + " |", "|" + "---|" * (len(header) + 1)]
    for row in rows:
        cells = [
            row["method"],
            f"{row['size_bytes'] / 1024:.1f}",
            f"{row['size_ratio']:.2f}x",
            f"{row['accuracy'] * 100:.2f}",
            f"{row['accuracy_delta']:+.2f}",
            f"{row['agreement'] * 100:.1f}",
        ]
        for n in sizes:
            latency = row["latency_ms"][n]
            cells += [f"{latency['median']:.3f} / {latency['p90']:.3f}", f"{row['speedup'][n]:.2f}x"]
        lines.append("| " + " | ".join([*cells, _notes(row)]) + " |")
    threads = rows[0]["threads"]
    return "\n".join(lines) + f"\n\nLatency measured with {threads} thread(s); sizes are the saved artifacts.\n"


def report_markdown(rows: Sequence[Row]) -> str:
    """The table of :func:`markdown_table` and the machine it was measured on."""
    return markdown_table(rows) + f"Measured on: {describe(machine_info())}.\n"


def _notes(row: Row) -> str:
    notes = [", ".join(f"{key}: {value}" for key, value in row["settings"].items())] if row.get("settings") else []
    if row["slower_than_fp32"]:
        notes.append("slower than fp32 at batch " + ", ".join(str(n) for n in row["slower_than_fp32"]))
    if "saturated_fraction" in row:
        notes.append(f"{row['saturated_fraction'] * 100:.2f}% of values saturated")
    if row.get("int4_weight_fraction", 1.0) < 1.0:
        notes.append(f"{row['int4_weight_fraction'] * 100:.0f}% of Linear weights in 4 bits, the rest fp32")
    if row.get("avx2_worst_pair_sum", 0) > INT16_MAX:
        notes.append("int16 sums can saturate on AVX2 CPUs without VNNI")
    return "; ".join(notes)


def write_report(rows: Sequence[Row], folder: str | os.PathLike) -> Path:
    """Write ``report.json`` (``{"machine": ..., "methods": rows}``) and ``report.md`` into ``folder``
    atomically; return the JSON path."""
    folder = Path(folder)
    atomic_write(folder / "report.md", ("# Quantization report\n\n" + report_markdown(rows)).encode())
    report = {"machine": machine_info(), "methods": list(rows)}
    return atomic_write(folder / "report.json", (json.dumps(report, indent=2) + "\n").encode())


def report_figure(rows: Sequence[Row]) -> Figure:
    """Bar charts side by side: artifact size, test accuracy, and median latency per batch size."""
    methods = [row["method"] for row in rows]
    sizes = list(rows[0]["latency_ms"])
    figure = Figure(figsize=(6 + 3 * len(sizes), 4.5), layout="constrained")
    axes = figure.subplots(1, 2 + len(sizes))
    panels = [
        ("size (KB)", [r["size_bytes"] / 1024 for r in rows]),
        ("accuracy (%)", [r["accuracy"] * 100 for r in rows]),
    ]
    panels += [(f"latency bs{n} (ms)", [r["latency_ms"][n]["median"] for r in rows]) for n in sizes]
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.bar(methods, values, color=["0.5", *["C0"] * (len(rows) - 1)])
        ax.set_title(title)
        ax.tick_params(axis="x", labelrotation=60, labelsize=8)
    low = min(r["accuracy"] for r in rows) * 100
    axes[1].set_ylim(max(0.0, low - 2), min(100.0, max(r["accuracy"] for r in rows) * 100 + 1))
    return figure


def log_tensorboard(writer: SummaryWriter, rows: Sequence[Row], step: int = 0) -> None:
    """Scalars ``quant/<method>/...``, the table as text, the bar chart, and one HParams run per method."""
    for row in rows:
        for tag, value in _scalars(row).items():
            writer.add_scalar(f"quant/{row['method']}/{tag}", value, step)
    writer.add_text("quant/report", report_markdown(rows), step)
    writer.add_figure("quant/comparison", report_figure(rows), step)
    for row in rows:
        metrics = {f"quant/{tag}": value for tag, value in _scalars(row).items()}
        writer.add_hparams(
            {"method": row["method"], "threads": row["threads"]}, metrics, run_name=f"quant_hparams/{row['method']}"
        )
    writer.flush()


def _scalars(row: Row) -> dict[str, float]:
    scalars = {key: float(row[key]) for key in ("size_bytes", "size_ratio", "accuracy", "accuracy_delta", "agreement")}
    for n, latency in row["latency_ms"].items():
        scalars[f"latency_ms_bs{n}"] = latency["median"]
        scalars[f"latency_p90_ms_bs{n}"] = latency["p90"]
        scalars[f"speedup_bs{n}"] = row["speedup"][n]
    if "saturated_fraction" in row:
        scalars["saturated_fraction"] = row["saturated_fraction"]
    return scalars
