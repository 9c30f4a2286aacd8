"""The quantization report as files (``report.json``, ``report.md``) and in TensorBoard.

TensorBoard gets the Markdown table as text, a bar chart of size, accuracy and latency, and one HParams run per
row: the HParams table lists the rows, and each measure is one scalar chart (``quant/<measure>``) with every row
beside the others (a run each), instead of a chart per row and measure.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure
from torch.utils.tensorboard import SummaryWriter

from quantization.artifacts.int8_overflow import INT16_MAX
from quantization.decide.frontier import frontier_figure, frontier_markdown, frontier_rows
from quantization.decide.objectives import human_bytes
from quantization.measure.machine import describe, machine_info
from storage.atomic import atomic_write

Row = dict[str, Any]


def markdown_table(rows: Sequence[Row]) -> str:
    """All methods as a Markdown table (latency: median / p90 ms per batch, speedup vs fp32; memory: the bytes
    the loaded model holds; input: what the artifact was fed, ``terms`` (ids and weights) or ``dense`` rows).

    >>> row = {"method": "fp32", "size_bytes": 2048, "size_ratio": 1.0, "accuracy": 0.9, "accuracy_delta": 0.0,
    ...        "agreement": 1.0, "latency_ms": {"1": {"median": 0.02, "p90": 0.03}}, "speedup": {"1": 1.0},
    ...        "slower_than_fp32": [], "threads": 1, "memory_bytes": 4096, "sparse_input": True}
    >>> print(markdown_table([row]).splitlines()[2])
    | fp32 | 2.0 | 1.00x | 4.0 | terms | 90.00 | +0.00 | 100.0 | 0.020 / 0.030 | 1.00x |  |
    """
    sizes = list(rows[0]["latency_ms"])
    header = ["method", "size (KB)", "fp32/size", "memory (KB)", "input", "accuracy (%)", "Δ acc (points)"]
    header += ["agreement (%)"]
    header += [h for n in sizes for h in (f"latency bs{n} (ms, median / p90)", f"speedup bs{n}")]
    lines = ["| " + " | ".join([*header, "notes"]) + " |", "|" + "---|" * (len(header) + 1)]
    for row in rows:
        cells = [
            row["method"],
            f"{row['size_bytes'] / 1024:.1f}",
            f"{row['size_ratio']:.2f}x",
            f"{row['memory_bytes'] / 1024:.1f}" if "memory_bytes" in row else "",
            "terms" if row.get("sparse_input") else "dense",
            f"{row['accuracy'] * 100:.2f}",
            f"{row['accuracy_delta']:+.2f}",
            f"{row['agreement'] * 100:.1f}",
        ]
        for n in sizes:
            latency = row["latency_ms"][n]
            cells += [f"{latency['median']:.3f} / {latency['p90']:.3f}", f"{row['speedup'][n]:.2f}x"]
        lines.append("| " + " | ".join([*cells, _notes(row)]) + " |")
    threads = rows[0]["threads"]
    return "\n".join(lines) + (
        f"\n\nLatency measured with {threads} thread(s); sizes are the saved artifacts; memory is the bytes of "
        "weights the loaded model holds at run time; input `terms`: the artifact read each text's term ids and "
        "weights (its first layer gathers those rows), `dense`: whole feature rows.\n"
    )


def report_markdown(
    rows: Sequence[Row], decision: Mapping[str, Any] | None = None, job: Mapping[str, Any] | None = None
) -> str:
    """The table of :func:`markdown_table`, the machine it was measured on, the size-accuracy frontier (rows with
    validation accuracy), the decision (recommended row, per-layer sensitivity, fallbacks) when there is one, and
    the job's stages (:func:`job_markdown`) when given."""
    text = markdown_table(rows) + f"Measured on: {describe(machine_info())}.\n"
    if job and job.get("left_out"):
        text += "\n" + job["left_out"] + "\n"
    if any("accuracy_delta_ci" in row for row in rows):
        text += "\n" + interval_markdown(rows) + "\n"
    if _has_validation(rows):
        text += "\n" + frontier_markdown(frontier_rows(rows)) + "\n"
    text += decision_markdown(decision) if decision else ""
    return text + ("\n" + job_markdown(job) if job and job.get("stages") else "")


def job_markdown(job: Mapping[str, Any]) -> str:
    """The job's stages in the order they ran, with their seconds and share.

    >>> print(job_markdown({"stages": {"fit": 3.0, "evaluate": 1.0}}))
    ## The job, stage by stage
    <BLANKLINE>
    | stage | seconds | share |
    |---|---|---|
    | fit | 3.00 | 75% |
    | evaluate | 1.00 | 25% |
    | total | 4.00 | 100% |
    <BLANKLINE>
    """
    stages = job["stages"]
    total = sum(stages.values()) or 1.0
    lines = ["## The job, stage by stage", "", "| stage | seconds | share |", "|---|---|---|"]
    lines += [f"| {name} | {seconds:.2f} | {seconds / total:.0%} |" for name, seconds in stages.items()]
    lines.append(f"| total | {sum(stages.values()):.2f} | 100% |")
    if best := job.get("fit_to_best"):
        lines += ["", f"The best checkpoint: epoch {best['epoch']}, saved {best['seconds']:.2f} s into the fit."]
    return "\n".join(lines) + "\n"


def interval_markdown(rows: Sequence[Row]) -> str:
    """Every row's accuracy change against fp32 with its 95 % interval per split, from the paired outcomes (gained:
    right where fp32 is wrong; lost: the reverse), and whether the interval holds 0 (indistinguishable from fp32).

    >>> row = {"method": "int4", "accuracy_delta": -1.0, "accuracy_delta_ci": [-1.0, -0.383],
    ...        "paired": {"test": {"gained": 0, "lost": 10, "examples": 1000}}}
    >>> print(interval_markdown([row]).splitlines()[-1])
    | int4 |  |  |  | -1.00 | -1.00 to -0.38 | 0 / 10 of 1,000 | yes |
    """
    lines = [
        "## Accuracy against fp32, with 95 % intervals",
        "",
        "Exact intervals on the examples where a row and fp32 disagree on correctness (Clopper-Pearson on the "
        "discordant pairs, McNemar's setting); an interval that holds 0 is indistinguishable from fp32.",
        "",
        "| method | Δ val (points) | 95 % interval | gained / lost | Δ test (points) | 95 % interval | gained / lost "
        "| differs from fp32 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        cells, differs = [row["method"]], []
        for split, key in (("val", "val_accuracy_delta"), ("test", "accuracy_delta")):
            interval, paired = row.get(f"{key}_ci"), row.get("paired", {}).get(split)
            if interval is None or paired is None:
                cells += ["", "", ""]
                continue
            cells += [f"{row[key]:+.2f}", f"{interval[0]:+.2f} to {interval[1]:+.2f}"]
            cells.append(f"{paired['gained']:,} / {paired['lost']:,} of {paired['examples']:,}")
            differs.append(interval[0] > 0 or interval[1] < 0)
        cells.append("yes" if any(differs) else "no" if differs else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _has_validation(rows: Sequence[Row]) -> bool:
    return bool(rows) and all("val_accuracy_delta" in row for row in rows)


def decision_markdown(decision: Mapping[str, Any]) -> str:
    """The recommendation with its reason and the runners-up, then one sensitivity table per ranked method."""
    rec = decision["recommendation"]
    max_bytes = f", at most {human_bytes(rec['max_bytes'])} shipped" if rec.get("max_bytes") else ""
    lines = [
        "",
        f"## Recommended: {rec['method']}" if rec["method"] is not None else "## No recommendation",
        "",
        f"Objective `{rec['objective']}`, budget {rec['max_accuracy_drop']:g} points of validation accuracy"
        f"{max_bytes}. " + rec["reason"],
        "",
    ]
    if rec.get("rule"):
        lines += [f"Budget rule: {rec['rule']}.", ""]
    if rec.get("resolution"):
        lines += [rec["resolution"], ""]
    lines += [f"- {r['method']}: {r['why_not']}" for r in rec["runners_up"]]
    if decision.get("deployment"):
        lines += ["", end_to_end_markdown(decision["deployment"])]
    for method, entry in decision["sensitivity"].items():
        lines += ["", f"## Per-layer sensitivity: {method}", "", sensitivity_table(entry["layers"])]
        if "fallback" in entry:
            lines += ["", f"Fallback: {entry['fallback']['summary']}"]
    return "\n".join(lines) + "\n"


def end_to_end_markdown(deployment: Mapping[str, Any]) -> str:
    """Where the bundle is, and raw input to label per example for the fp32 checkpoint and the bundle.

    >>> timing = {"end_to_end_ms": {"median": 0.96, "p90": 1.3}, "features_ms": {"median": 0.67, "p90": 0.9},
    ...           "model_ms": {"median": 0.14, "p90": 0.2}, "features_share": 0.7}
    >>> fast = {k: ({"median": v["median"] / 6, "p90": v["p90"] / 6} if k != "features_share" else 0.17)
    ...         for k, v in timing.items()}
    >>> print(end_to_end_markdown({"bundle": "b", "end_to_end": {"fp32 checkpoint": {"1": timing},
    ...                                                          "bundle: x": {"1": fast}}}).splitlines()[-1])
    | bundle: x | 1 | 160 / 217 | 112 (17%) | 23 | 6.00x |
    """
    lines = [
        "## End to end: raw input to label",
        "",
        f"Deployable bundle: `{deployment['bundle']}` (`load_bundle(path).predict(...)`, or `predict --artifact`).",
        "",
        "| pipeline | batch | per example (us, median / p90) | features (share) | model | speedup |",
        "|---|---|---|---|---|---|",
    ]
    footprint = deployment.get("footprint") or {}
    if "peak_rss_bytes" in footprint:
        heavy = ", ".join(footprint["heavy_modules"]) or "neither torch, Lightning nor scikit-learn"
        lines[4:4] = [
            f"A fresh process that loads it (`{footprint['loader']}`) and labels one input: peak RSS "
            f"{footprint['peak_rss_bytes'] / 2**20:.0f} MB, import + load {footprint['import_load_s']:.2f} s, "
            f"first prediction {footprint['first_predict_s'] * 1e3:.1f} ms; it imported {heavy}.",
            "",
        ]
    timings = deployment["end_to_end"]
    if not timings:
        return "\n".join([*lines[: len(lines) - 2], "No raw test inputs to time end to end."])
    reference = next(iter(timings.values()))
    for name, per_batch in timings.items():
        for n, t in per_batch.items():
            e2e, features, model = t["end_to_end_ms"], t["features_ms"]["median"], t["model_ms"]["median"]
            speedup = reference[n]["end_to_end_ms"]["median"] / e2e["median"]
            lines.append(
                f"| {name} | {n} | {e2e['median'] * 1e3:.0f} / {e2e['p90'] * 1e3:.0f} | {features * 1e3:.0f} "
                f"({t['features_share']:.0%}) | {model * 1e3:.0f} | {speedup:.2f}x |"
            )
    return "\n".join(lines)


def sensitivity_table(layers: Sequence[Row]) -> str:
    """One row per Linear layer quantized alone: its size, the validation accuracy lost, the logits' SQNR.

    >>> print(sensitivity_table([{"layer": "0", "parameters": 7840, "accuracy_drop": 0.25, "sqnr_db": 21.5}]))
    | layer | weights | Δ val acc (points) | logit SQNR (dB) |
    |---|---|---|---|
    | 0 | 7,840 | -0.25 | 21.5 |
    """
    lines = ["| layer | weights | Δ val acc (points) | logit SQNR (dB) |", "|---|---|---|---|"]
    for row in layers:
        lines.append(
            f"| {row['layer']} | {row['parameters']:,} | {-row['accuracy_drop']:+.2f} | {row['sqnr_db']:.1f} |"
        )
    return "\n".join(lines)


def _notes(row: Row) -> str:
    notes = [", ".join(f"{key}: {value}" for key, value in row["settings"].items())] if row.get("settings") else []
    if row.get("evaluated_batch_size") == 1:
        notes.append("activations quantized per call: accuracy one example a call, as served")
    if row["slower_than_fp32"]:
        notes.append("slower than fp32 at batch " + ", ".join(str(n) for n in row["slower_than_fp32"]))
    if "saturated_fraction" in row:
        notes.append(f"{row['saturated_fraction'] * 100:.2f}% of values saturated")
    if row.get("int4_weight_fraction", 1.0) < 1.0:
        notes.append(f"{row['int4_weight_fraction'] * 100:.0f}% of Linear weights in 4 bits, the rest fp32")
    if row.get("avx2_worst_pair_sum", 0) > INT16_MAX:
        notes.append("int16 sums can saturate on AVX2 CPUs without VNNI")
    if row.get("dense_input"):
        notes.append(f"dense input: {row['dense_input']}")
    if "pruned_terms" in row:
        units = f", {row['hidden_units']} hidden units" if "hidden_units" in row else ""
        notes.append(f"{row['pruned_terms']:,} of {row['vocabulary_terms']:,} terms{units}, fine-tuned")
    return "; ".join(notes)


def write_report(
    rows: Sequence[Row],
    folder: str | os.PathLike,
    decision: Mapping[str, Any] | None = None,
    job: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``report.json`` (``{"machine": ..., "methods": rows}``, plus ``recommendation`` and
    ``sensitivity`` with a decision, ``job`` (stage seconds, methods left out) when given) and ``report.md`` into
    ``folder`` atomically; return the JSON path."""
    folder = Path(folder)
    text = "# Quantization report\n\n" + report_markdown(rows, decision, job)
    atomic_write(folder / "report.md", text.encode())
    report = {"machine": machine_info(), "methods": list(rows), **(decision or {})}
    if job:
        report["job"] = dict(job)
    if _has_validation(rows):
        report["frontier"] = frontier_rows(rows)
    return atomic_write(folder / "report.json", (json.dumps(report, indent=2) + "\n").encode())


def report_figure(rows: Sequence[Row]) -> Figure:
    """Horizontal bars side by side, the rows named once on the left: artifact size, test accuracy, memory held and
    median latency per batch size (fp32 grey)."""
    methods = [row["method"] for row in rows][::-1]  # fp32 on top
    sizes = list(rows[0]["latency_ms"])
    figure = Figure(figsize=(9 + 2.5 * len(sizes), 1.5 + 0.25 * len(rows)))
    axes = figure.subplots(1, 3 + len(sizes), sharey=True)
    panels = [
        ("size (KB)", [r["size_bytes"] / 1024 for r in rows]),
        ("accuracy (%)", [r["accuracy"] * 100 for r in rows]),
        ("memory held (KB)", [r.get("memory_bytes", 0) / 1024 for r in rows]),
    ]
    panels += [(f"latency bs{n} (ms)", [r["latency_ms"][n]["median"] for r in rows]) for n in sizes]
    for ax, (title, values) in zip(axes, panels, strict=True):
        ax.barh(methods, values[::-1], color=[*["C0"] * (len(rows) - 1), "0.5"])
        ax.set_title(title, fontsize=9)
        ax.tick_params(labelsize=8)
    low = min(r["accuracy"] for r in rows) * 100
    axes[1].set_xlim(max(0.0, low - 2), min(100.0, max(r["accuracy"] for r in rows) * 100 + 1))
    figure.subplots_adjust(left=0.16, right=0.99, wspace=0.15, top=0.9, bottom=0.1)
    return figure


def log_tensorboard(
    writer: SummaryWriter, rows: Sequence[Row], step: int = 0, decision: Mapping[str, Any] | None = None
) -> None:
    """The table (with the recommendation) as text, the bar chart, per-layer sensitivity tables and charts, and one
    HParams run per row (its measures as scalars ``quant/<measure>``: one chart per measure, the rows beside each
    other)."""
    writer.add_text("quant/report", report_markdown(rows, decision), step)
    writer.add_figure("quant/comparison", report_figure(rows), step)
    if any("accuracy_delta_ci" in row for row in rows):
        writer.add_text("quant/intervals", interval_markdown(rows), step)
    if _has_validation(rows):
        table = frontier_rows(rows)
        writer.add_text("quant/frontier", frontier_markdown(table), step)
        writer.add_figure("quant/frontier", frontier_figure(table), step)
    if decision:
        rec = decision["recommendation"]
        text = f"**{rec['method']}**: {rec['reason']}" if rec["method"] is not None else rec["reason"]
        extra = [f"Budget rule: {rec['rule']}." if rec.get("rule") else "", rec.get("resolution", "")]
        writer.add_text("quant/recommendation", "\n\n".join([text, *filter(None, extra)]), step)
        for method, entry in decision["sensitivity"].items():
            writer.add_text(f"quant/sensitivity/{method}", sensitivity_table(entry["layers"]), step)
    for row in rows:
        metrics = {f"quant/{tag}": value for tag, value in _scalars(row).items()}
        writer.add_hparams(
            {"method": row["method"], "threads": row["threads"]}, metrics, run_name=f"quant_hparams/{row['method']}"
        )
    writer.flush()


def log_job(
    writer: SummaryWriter, rows: Sequence[Row], decision: Mapping[str, Any] | None, job: Mapping[str, Any], step: int
) -> None:
    """What the job adds after the report: the whole report again as text (with the bundle's end to end), the
    bundle's fresh-process footprint as scalars, and the stages' seconds (a table, and ``job/<stage>_s``)."""
    writer.add_text("quant/report", report_markdown(rows, decision, job), step)
    deployment = (decision or {}).get("deployment") or {}
    if deployment:
        writer.add_text("quant/end_to_end", end_to_end_markdown(deployment), step)
        for key, value in deployment.get("footprint", {}).items():
            if key in ("peak_rss_bytes", "import_load_s", "first_predict_s"):
                writer.add_scalar(f"quant/bundle/{key}", value, step)
    if job.get("stages"):
        writer.add_text("job/stages", job_markdown(job), step)
        for name, seconds in job["stages"].items():
            writer.add_scalar(f"job/{name.replace(' ', '_')}_s", seconds, step)
    if job.get("fit_to_best"):
        writer.add_scalar("job/fit_to_best_s", job["fit_to_best"]["seconds"], step)
    writer.flush()


def _scalars(row: Row) -> dict[str, float]:
    keys = ("size_bytes", "size_ratio", "memory_bytes", "memory_ratio", "accuracy", "accuracy_delta", "agreement")
    keys += ("shipped_bytes", "preprocessing_bytes")
    scalars = {key: float(row[key]) for key in keys if key in row}
    if "val_accuracy_delta" in row:
        scalars["val_accuracy_delta"] = float(row["val_accuracy_delta"])
    for key in ("accuracy_delta_ci", "val_accuracy_delta_ci"):
        if key in row:
            scalars[f"{key}_low"], scalars[f"{key}_high"] = map(float, row[key])
    for n, latency in row["latency_ms"].items():
        scalars[f"latency_ms_bs{n}"] = latency["median"]
        scalars[f"latency_p90_ms_bs{n}"] = latency["p90"]
        scalars[f"speedup_bs{n}"] = row["speedup"][n]
    if "saturated_fraction" in row:
        scalars["saturated_fraction"] = row["saturated_fraction"]
    return scalars
