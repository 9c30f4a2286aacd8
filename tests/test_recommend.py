"""The recommendation from report rows: the objective, the validation budget, ties, and the sentences."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from quantization import QuantizationData
from quantization.decide.frontier import frontier_rows, on_frontier
from quantization.decide.recommend import check_max_accuracy_drop, check_objective, recommend
from quantization.measure.rows import MeasureSettings, measure_methods


def row(method: str, size_bytes: int, ms_1: float, ms_256: float, val: float) -> dict:
    """A report row with what :func:`recommend` reads (``measure_methods`` writes more)."""
    latency = {"1": {"median": ms_1, "p90": ms_1 * 1.1}, "256": {"median": ms_256, "p90": ms_256 * 1.1}}
    return {"method": method, "size_bytes": size_bytes, "latency_ms": latency, "val_accuracy_delta": val}


ROWS = [
    row("fp32", 409_600, 0.789, 9.0, 0.0),
    row("onnx_static_int8", 114_000, 0.092, 2.5, -0.04),
    row("onnx_int4", 60_000, 0.120, 4.0, -0.35),
    row("int2_weight_only", 30_000, 0.700, 30.0, -6.0),
    row("fp16", 204_800, 1.100, 12.0, 0.0),
]


def test_latency_objective_picks_the_fastest_within_budget():
    result = recommend(ROWS, 0.5, "latency_bs1")
    assert result["method"] == "onnx_static_int8"
    assert result["reason"] == (
        "onnx_static_int8: 8.6x faster than fp32 at batch 1 (0.092 vs 0.789 ms) and 3.6x smaller, "
        "-0.04 points on validation (budget 0.5)."
    )
    assert result["runners_up"] == [
        {"method": "onnx_int4", "why_not": "1.3x slower at batch 1 (0.120 vs 0.092 ms)"},
        {"method": "int2_weight_only", "why_not": "over budget by 5.50 points (-6.00 on validation)"},
        {"method": "fp32", "why_not": "8.6x slower at batch 1 (0.789 vs 0.092 ms)"},
        {"method": "fp16", "why_not": "12.0x slower at batch 1 (1.100 vs 0.092 ms)"},
    ]
    assert result["objective"] == "latency_bs1" and result["max_accuracy_drop"] == 0.5


def test_memory_objective_counts_what_the_loaded_model_holds():
    # A weight-only int4 file is small but dequantizes at load: it holds fp32's bytes, onnx_int4 keeps its 4 bits.
    held = {"fp32": 409_600, "onnx_static_int8": 110_000, "onnx_int4": 60_000, "int2_weight_only": 409_600}
    rows = [r | {"memory_bytes": held.get(r["method"], r["size_bytes"])} for r in ROWS]
    rows.append(row("int4_weight_only", 58_000, 0.5, 9.0, -0.1) | {"memory_bytes": 409_600})
    assert recommend(rows, 0.5, "size")["method"] == "int4_weight_only"
    result = recommend(rows, 0.5, "memory")
    assert result["method"] == "onnx_int4"
    assert result["reason"] == (
        "onnx_int4: 6.8x less memory than fp32 (58.6 KB vs 400.0 KB held) and 6.8x smaller, 6.6x faster at "
        "batch 1, -0.35 points on validation (budget 0.5)."
    )
    why_not = {r["method"]: r["why_not"] for r in result["runners_up"]}
    assert why_not["int4_weight_only"] == "6.8x more memory (400.0 KB vs 58.6 KB)"
    with pytest.raises(ValueError, match=r"Expected row 'fp32' to have `memory_bytes` for objective 'memory'"):
        recommend(ROWS, 0.5, "memory")


def test_size_objective_and_a_tighter_budget():
    assert recommend(ROWS, 0.5, "size")["method"] == "onnx_int4"  # int2 is smaller but 6 points down
    tight = recommend(ROWS, 0.1, "size")
    assert tight["method"] == "onnx_static_int8"
    assert tight["reason"] == (
        "onnx_static_int8: 3.6x smaller than fp32 (111.3 KB vs 400.0 KB) and 8.6x faster at batch 1, "
        "-0.04 points on validation (budget 0.1). Over budget, and so left out though better on the objective: "
        "onnx_int4 (-0.35), int2_weight_only (-6.00)."
    )
    assert tight["runners_up"][1] == {
        "method": "onnx_int4",
        "why_not": "over budget by 0.25 points (-0.35 on validation)",
    }


def test_any_measured_batch_size_is_an_objective():
    result = recommend(ROWS, 0.5, "latency_bs256")
    assert result["method"] == "onnx_static_int8"
    assert result["reason"].startswith("onnx_static_int8: 3.6x faster than fp32 at batch 256 (2.500 vs 9.000 ms)")


def test_fp32_when_every_method_is_over_budget():
    result = recommend(ROWS, 0.0, "latency_bs1")
    # fp16 keeps fp32's validation accuracy but is slower: within budget, not better.
    assert result["method"] == "fp32"
    assert result["reason"] == (
        "fp32: 3 of 4 methods lose more than 0 points on validation and fp16, the only one within budget, "
        "is not clearly faster than fp32 (0.789 ms at batch 1)."
    )
    only_over = [r for r in ROWS if r["method"] != "fp16"]
    assert recommend(only_over, 0.0, "size")["reason"] == (
        "fp32: every method loses more than 0 points on validation (closest: onnx_static_int8, -0.04)."
    )


def test_fp32_when_nothing_within_budget_beats_it():
    rows = [row("fp32", 1000, 0.5, 5.0, 0.0), row("fp16", 600, 0.6, 6.0, 0.0), row("bf16", 600, 0.7, 7.0, 0.0)]
    result = recommend(rows, 1.0, "latency_bs1")
    assert result["method"] == "fp32"
    assert result["reason"] == "fp32: none of the 2 within budget is clearly faster than fp32 (0.500 ms at batch 1)."
    assert result["runners_up"][0] == {"method": "fp16", "why_not": "1.2x slower at batch 1 (0.600 vs 0.500 ms)"}


def test_ties_go_to_the_smaller_artifact_then_to_the_more_accurate():
    rows = [
        row("fp32", 4000, 1.0, 9.0, 0.0),
        row("a", 1200, 0.2, 2.0, -0.1),
        row("b", 1000, 0.2, 2.0, -0.3),  # as fast as a, smaller
        row("c", 1000, 0.2, 2.0, -0.2),  # as fast and as small as b, more accurate
    ]
    result = recommend(rows, 0.5, "latency_bs1")
    assert result["method"] == "c"
    assert result["runners_up"][:2] == [
        {"method": "b", "why_not": "as fast and as small, less accurate (-0.30 vs -0.20 points)"},
        {"method": "a", "why_not": "as fast, larger (1.2 KB vs 1000 B)"},
    ]
    assert recommend(rows, 0.5, "size")["method"] == "c"


def test_budget_is_met_despite_float_rounding_of_accuracies():
    delta = (0.895 - 0.9) * 100  # -0.5000000000000004: half a point lost on 200 samples
    assert delta < -0.5
    rows = [row("fp32", 4000, 1.0, 9.0, 0.0), row("int8", 1000, 0.2, 2.0, delta)]
    assert recommend(rows, 0.5, "size")["method"] == "int8"


@pytest.mark.parametrize(
    ("value", "match"),
    [(-0.1, "got -0.1"), (math.nan, "got nan"), (math.inf, "got inf"), (True, "got True"), ("0.5", "got '0.5'")],
    ids=["negative", "nan", "inf", "bool", "string"],
)
def test_max_accuracy_drop_is_validated(value, match):
    with pytest.raises(ValueError, match=rf"Expected `max_accuracy_drop` to be a finite number .* >= 0, {match}\."):
        check_max_accuracy_drop(value)


@pytest.mark.parametrize(
    ("objective", "batch_sizes", "match"),
    [
        ("speed", None, r"to be size, memory, accuracy, latency_bs1 or latency_bs<N> .*got 'speed'\."),
        ("latency_bs0", None, r"got 'latency_bs0'\."),
        ("latency_bs01", None, r"got 'latency_bs01'\."),
        (1, None, r"got 1\."),
        ("latency_bs64", [1, 256], r"N a measured batch size \(1, 256\), got 'latency_bs64'\."),
    ],
    ids=["word", "zero", "leading_zero", "not_a_string", "not_measured"],
)
def test_objective_is_validated(objective, batch_sizes, match):
    with pytest.raises(ValueError, match=match):
        check_objective(objective, batch_sizes)


def test_rows_are_validated():
    with pytest.raises(ValueError, match=r"include the fp32 baseline, got \(onnx_int4\)"):
        recommend([ROWS[2]], 0.5, "size")
    missing = {key: value for key, value in ROWS[1].items() if key != "val_accuracy_delta"}
    with pytest.raises(ValueError, match=r"row 'onnx_static_int8' to have a finite `val_accuracy_delta`.*got None"):
        recommend([ROWS[0], missing], 0.5, "size")
    with pytest.raises(ValueError, match=r"measured batch size \(1, 256\), got 'latency_bs8'"):
        recommend(ROWS, 0.5, "latency_bs8")


def test_recommends_from_measured_rows():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 4)).eval()
    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(1))
    batches = [(x[:16], torch.arange(16) % 4), (x[16:], torch.arange(16) % 4)]
    settings = MeasureSettings(latency_batch_sizes=(1, 8), num_threads=1, min_run_time_s=0.005)
    methods = {"weight_only_int8": None, "int4_weight_only": None, "fp16": None}
    rows, _ = measure_methods(model, methods, batches, QuantizationData(example=x[:1]), settings)
    rows = [r | {"val_accuracy_delta": r["accuracy_delta"]} for r in rows]  # these batches stand for validation

    result = recommend(rows, 100.0, "size")  # every method within budget: the smallest artifact wins

    assert result["method"] == min(rows, key=lambda r: r["size_bytes"])["method"] == "int4_weight_only"
    assert [r["method"] for r in result["runners_up"]] == ["weight_only_int8", "fp16", "fp32"]


def test_a_latency_win_inside_timing_noise_does_not_beat_fp32():
    rows = [row("fp32", 4000, 0.015, 0.4, 0.0), row("int4", 700, 0.011, 0.3, -0.04)]
    rows[1]["latency_ms"]["1"]["p90"] = 0.018  # faster by median, but its p90 is above fp32's median
    result = recommend(rows, 0.05, "latency_bs1")
    assert result["method"] == "fp32"
    assert result["runners_up"] == [
        {
            "method": "int4",
            "why_not": "faster by median (0.011 ms) but its p90 (0.018 ms) is not under fp32's median: noise",
        }
    ]
    rows[1]["latency_ms"]["1"]["p90"] = 0.014
    assert recommend(rows, 0.05, "latency_bs1")["method"] == "int4"


def test_a_noisy_runner_up_is_named_as_noise_even_when_another_row_wins():
    rows = [row("fp32", 4000, 0.100, 1.0, 0.0), row("a", 1000, 0.050, 1.0, 0.0), row("b", 1000, 0.070, 1.0, 0.0)]
    rows[1]["latency_ms"]["1"]["p90"] = 0.120  # a: fastest median, but its p90 is above fp32's median
    result = recommend(rows, 0.5, "latency_bs1")
    assert result["method"] == "b"
    why = {r["method"]: r["why_not"] for r in result["runners_up"]}
    assert why["a"] == "faster by median (0.050 ms) but its p90 (0.120 ms) is not under fp32's median: noise"


# A pruned row ships its own, smaller vocabulary: what ships is the artifact and its preprocessing.
SHIPPED = [
    r | {"shipped_bytes": r["size_bytes"] + 100_000, "preprocessing_bytes": 100_000}
    for r in ROWS
    if r["method"] in ("fp32", "onnx_static_int8", "onnx_int4")
] + [
    row("onnx_int4+prune2000x32", 40_000, 0.060, 1.0, -0.45) | {"shipped_bytes": 90_000, "preprocessing_bytes": 50_000},
    row("onnx_int4+prune1000x32", 20_000, 0.050, 0.9, -1.20) | {"shipped_bytes": 45_000, "preprocessing_bytes": 25_000},
]


def test_size_counts_the_bytes_that_ship():
    # onnx_int4's artifact (60 KB) is smaller than onnx_static_int8's, but the pruned row ships fewer bytes in all.
    result = recommend(SHIPPED, 0.5, "size")
    assert result["method"] == "onnx_int4+prune2000x32"
    assert result["reason"].startswith("onnx_int4+prune2000x32: 5.7x smaller than fp32 (87.9 KB vs 497.7 KB shipped)")


def test_the_most_accurate_row_under_max_bytes():
    result = recommend(SHIPPED, 0.5, "accuracy", max_bytes=160_000)
    assert result["method"] == "onnx_int4"  # the most accurate of the three that fit, fp32 does not
    assert result["reason"] == (
        "onnx_int4: the most accurate of the 3 rows that ship at most 156.2 KB (156.2 KB, 3.2x fewer than fp32), "
        "-0.35 points on validation (budget 0.5). max_bytes (156.2 KB) leaves out 2 of 5 rows, fp32 among them "
        "(497.7 KB)."
    )
    why_not = {r["method"]: r["why_not"] for r in result["runners_up"]}
    assert why_not["fp32"] == "ships more than max_bytes (497.7 KB vs 156.2 KB)"
    assert why_not["onnx_int4+prune2000x32"] == "less accurate (-0.45 vs -0.35 points on validation)"
    assert result["max_bytes"] == 160_000 and result["objective"] == "accuracy"
    # Tighter: only the 1,000-term row fits; it is over the accuracy budget, and the sentence says so.
    tight = recommend(SHIPPED, 0.5, "accuracy", max_bytes=50_000)
    assert tight["method"] == "onnx_int4+prune1000x32" and "over it, and so is every row that fits" in tight["reason"]
    nothing = recommend(SHIPPED, 0.5, "accuracy", max_bytes=1_000)  # no row fits: no recommendation, not the smallest
    assert nothing["method"] is None
    assert nothing["reason"].startswith("No recommendation: no row ships at most 1000 B; the smallest, onnx_int4+")
    assert recommend(SHIPPED, 0.5, "accuracy")["method"] == "fp32"  # no byte budget: the most accurate of all


def test_max_bytes_with_another_objective_keeps_its_rule_among_the_rows_that_fit():
    # The fastest within budget that fits; fp32 does not fit, so it is no fallback and need not be beaten.
    assert recommend(SHIPPED, 0.5, "latency_bs1", max_bytes=160_000)["method"] == "onnx_int4+prune2000x32"
    assert recommend(SHIPPED, 0.5, "latency_bs1", max_bytes=600_000)["method"] == "onnx_int4+prune2000x32"
    # Nothing within the accuracy budget fits: the most accurate row that does.
    result = recommend(SHIPPED, 0.5, "latency_bs256", max_bytes=50_000)
    assert result["method"] == "onnx_int4+prune1000x32" and "the most accurate of the 1 rows" in result["reason"]


def test_frontier_flags_the_rows_no_other_row_beats_on_bytes_and_accuracy():
    generator = torch.Generator().manual_seed(0)
    for _ in range(20):
        rows = [
            {"method": f"m{i}", "size_bytes": int(b), "val_accuracy_delta": float(d), "accuracy_delta": 0.0}
            for i, (b, d) in enumerate(zip(torch.randint(1, 8, (9,), generator=generator).tolist(),
                                           (torch.randint(-6, 1, (9,), generator=generator) / 2).tolist(), strict=True))
        ]  # fmt: skip
        flags = on_frontier(rows)
        for flag, r in zip(flags, rows, strict=True):  # brute force: dominated by another row, or a repeat of one
            dominated = any(
                o["size_bytes"] <= r["size_bytes"] and o["val_accuracy_delta"] >= r["val_accuracy_delta"]
                and (o["size_bytes"], o["val_accuracy_delta"]) != (r["size_bytes"], r["val_accuracy_delta"])
                for o in rows
            )  # fmt: skip
            repeat = any((o["size_bytes"], o["val_accuracy_delta"]) == (r["size_bytes"], r["val_accuracy_delta"])
                         for o in rows[: rows.index(r)])  # fmt: skip
            assert flag == (not dominated and not repeat)
    table = frontier_rows([r | {"accuracy_delta": r["val_accuracy_delta"]} for r in SHIPPED])
    assert [r["method"] for r in table if r["on_frontier"]] == [
        "onnx_int4+prune1000x32", "onnx_int4+prune2000x32", "onnx_int4", "onnx_static_int8", "fp32"]  # fmt: skip
    assert table[0]["artifact_bytes"] == 20_000 and table[-1]["shipped_bytes"] == 509_600
