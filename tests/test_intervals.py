"""Every accuracy delta with its 95 % interval from the paired outcomes, the budget rule that reads it, and
constraints no row meets: the arithmetic on hand-made counts, the rule's edge cases, and the fields the report,
TensorBoard, the model card and the CLI carry."""

from __future__ import annotations

import json

import pytest
import torch
from scipy.stats import binomtest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from torch.utils.tensorboard import SummaryWriter

from callbacks.deployment import _CARD_KEYS, ship
from cli import main
from quantization import METHODS, QuantizationData
from quantization.decide.decision import Budget, over_budget
from quantization.decide.objectives import (
    check_rule,
    confidence_below,
    examples_to_resolve,
    over_budget_on_validation,
    paired_interval,
)
from quantization.decide.recommend import recommend
from quantization.measure.against_fp32 import accuracy_against, paired_outcomes
from quantization.measure.rows import MeasureSettings
from quantization.pipeline import quantization_report
from tests.helpers import blobs_mlp, text_args, write_text_corpus

FAST = MeasureSettings(latency_batch_sizes=(1,), min_run_time_s=0.005)


def test_the_interval_of_a_hand_made_case():
    # 10 examples of 1,000 lost, none gained: -1 point; the win share p is in [0, 1 - 0.025 ** (1/10)] (exact).
    low, high = paired_interval(gained=0, lost=10, examples=1000)
    assert low == pytest.approx(-1.0)
    assert high == pytest.approx(100 * 10 / 1000 * (2 * (1 - 0.025 ** (1 / 10)) - 1))  # -0.383
    # 3 gained, 7 lost of 500: scipy's exact (Clopper-Pearson) interval on p, mapped to points.
    ci = binomtest(3, 10).proportion_ci(0.95, method="exact")
    expected = (2 * 10 / 500 * (2 * ci.low - 1) * 50, 2 * 10 / 500 * (2 * ci.high - 1) * 50)
    assert paired_interval(3, 7, 500) == pytest.approx(expected)
    # The width follows the disagreements, not the examples that agree: 4x the discordant pairs at the same
    # share, about half the width relative to the count.
    narrow, wide = paired_interval(12, 28, 2000), paired_interval(3, 7, 2000)
    assert (narrow[1] - narrow[0]) == pytest.approx(2 * (wide[1] - wide[0]), rel=0.25)
    assert paired_interval(0, 0, 2314) == (0.0, 0.0)  # identical predictions: no difference at all


def test_confidence_and_examples_needed():
    assert confidence_below(0, 10, 1000, -0.5) == pytest.approx(1 - 0.75**10)
    _, high = paired_interval(0, 30, 1000)
    assert high < -0.5 and confidence_below(0, 30, 1000, -0.5) > 0.975  # the interval below -0.5: >= 97.5 % one-sided
    assert confidence_below(5, 5, 1000, -2.0) == 0.0  # 10 disagreements cannot lose 2 points of 1,000
    assert examples_to_resolve(1.0, 2000, 0.5) == 8000  # half the width: 4x the examples
    with pytest.raises(ValueError, match=r"Expected `rule` to be one of \(interval, point\), got 'median'"):
        check_rule("median")
    with pytest.raises(ValueError, match=r"Expected `rule` to be one of \(interval, point\), got 'p'"):
        Budget(rule="p")


def test_paired_outcomes_and_the_row_fields():
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    fp32 = torch.tensor([0, 1, 0, 0, 1, 1])  # right on 4
    row = torch.tensor([0, 1, 1, 1, 0, 0])  # gains examples 2 and 5, loses 3 and 4
    counts = paired_outcomes(row, fp32, [(torch.zeros(6, 2), labels)])
    assert counts == {"gained": 2, "lost": 2, "examples": 6}
    base = {"accuracy": 4 / 6, "size_bytes": 10, "memory_bytes": 10, "val_accuracy": 0.5}
    measured = accuracy_against(base | {"paired": {"test": counts, "val": counts}}, base, 4 / 6)
    assert measured["accuracy_delta_ci"] == pytest.approx(list(paired_interval(2, 2, 6)))
    assert measured["val_accuracy_delta_ci"][0] < 0 < measured["val_accuracy_delta_ci"][1]


def row(method, size, ms, val, ci=None, paired=None, test=0.0):
    out = {"method": method, "base_method": method.split("+")[0], "size_bytes": size, "val_accuracy_delta": val}
    out |= {"latency_ms": {"1": {"median": ms, "p90": ms}}, "accuracy_delta": test}
    if ci is not None:
        out["val_accuracy_delta_ci"] = ci
    if paired is not None:
        out["paired"] = {"val": paired}
    return out


FP32 = row("fp32", 400_000, 0.8, 0.0, [0.0, 0.0], {"gained": 0, "lost": 0, "examples": 2314})


@pytest.mark.parametrize(
    ("ci", "interval_over", "point_over"),
    [
        ([-1.5, 0.3], False, True),  # -0.6 by point, but the interval holds 0: noise cannot reject it
        ([-1.5, -0.5], False, True),  # the upper bound exactly at -budget: not over
        ([-1.5, -0.51], True, True),  # wholly below -budget
        ([-0.9, -0.2], False, True),
    ],
    ids=["holds-0", "upper-at-budget", "wholly-below", "straddles-budget"],
)
def test_the_budget_rule_reads_the_interval(ci, interval_over, point_over):
    candidate = row("onnx_int4", 100_000, 0.1, -0.6, ci, {"gained": 20, "lost": 34, "examples": 2314})
    assert over_budget_on_validation(candidate, 0.5, "interval") is interval_over
    assert over_budget_on_validation(candidate, 0.5, "point") is point_over
    assert over_budget(candidate, Budget(0.5, "size")) is interval_over
    assert recommend([FP32, candidate], 0.5, "size")["method"] == ("fp32" if interval_over else "onnx_int4")
    assert recommend([FP32, candidate], 0.5, "size", rule="point")["method"] == "fp32"


def test_a_rejected_row_says_by_how_much_and_how_surely():
    over = row("onnx_int4", 100_000, 0.1, -2.0, [-2.6, -1.4], {"gained": 10, "lost": 56, "examples": 2314})
    result = recommend([FP32, over], 0.5, "size")
    assert result["method"] == "fp32"
    assert result["rule"] == "a row is over budget only when its whole 95 % validation interval lies below -0.5 points"
    assert confidence_below(10, 56, 2314, -0.5) > 0.9995
    assert result["runners_up"][0]["why_not"] == (
        "over budget by 1.50 points (-2.00 on validation, 95 % interval -2.60 to -1.40; below -0.5 with "
        "over 99.9 % confidence)"
    )
    # A row without an interval is read by its point estimate, and the rule line says so.
    ci = list(paired_interval(10, 38, 2314))  # -1.21 points, 95 % interval -1.64 to -0.62
    near = row("onnx_int4", 100_000, 0.1, 100 * (10 - 38) / 2314, ci, {"gained": 10, "lost": 38, "examples": 2314})
    sure = confidence_below(10, 38, 2314, -0.5)
    assert recommend([FP32, near], 0.5, "size")["runners_up"][0]["why_not"].endswith(
        f"below -0.5 with {100 * sure:.1f} % confidence)"
    )
    assert 0.975 < sure < 0.9995  # the interval wholly below -0.5: at least 97.5 % one-sided
    plain = recommend([row("fp32", 400_000, 0.8, 0.0), row("int8", 100_000, 0.1, -0.6)], 0.5, "size")
    assert plain["method"] == "fp32" and plain["rule"].startswith("a row is over budget when its validation delta")


def test_validation_too_small_to_resolve_the_budget_says_so():
    wide = row("onnx_int4", 100_000, 0.1, -0.3, [-1.2, 0.6], {"gained": 50, "lost": 57, "examples": 2314})
    result = recommend([FP32, wide], 0.5, "size")
    assert result["method"] == "onnx_int4"
    assert "95 % interval -1.20 to +0.60, indistinguishable from fp32" in result["reason"]
    assert result["resolution"] == (
        "Validation cannot resolve a 0.5-point budget for 1 of 2 rows: their 95 % intervals are up to +/-0.90 points "
        f"wide on 2,314 examples; about {examples_to_resolve(0.9, 2314, 0.5):,} validation examples would resolve "
        "them all."
    )
    narrow = row("onnx_int4", 100_000, 0.1, -0.3, [-0.6, 0.0], {"gained": 5, "lost": 12, "examples": 2314})
    assert recommend([FP32, narrow], 0.5, "size")["resolution"] == ""


@pytest.mark.parametrize("objective", ["latency_bs1", "size", "accuracy"])
def test_max_bytes_below_every_row_recommends_nothing(objective, recwarn):
    small = row("onnx_int4", 100_000, 0.1, -0.1, [-0.4, 0.2], {"gained": 5, "lost": 7, "examples": 2314})
    result = recommend([FP32, small], 0.5, objective, max_bytes=50_000)
    assert result["method"] is None
    assert (
        result["reason"] == "No recommendation: no row ships at most 48.8 KB; the smallest, onnx_int4, ships 97.7 KB."
    )
    assert {r["why_not"] for r in result["runners_up"]} == {
        "ships more than max_bytes (390.6 KB vs 48.8 KB)",
        "ships more than max_bytes (97.7 KB vs 48.8 KB)",
    }
    assert ship(None, [FP32, small], {"recommendation": result}, None, None, 1, 0.01) is None  # no bundle, one line
    assert [str(w.message) for w in recwarn] == [f"No deployable bundle written: {result['reason']}"]


def test_max_bytes_that_leaves_fp32_out_is_in_the_main_reason():
    small = row("onnx_int4", 100_000, 0.1, -0.1, [-0.4, 0.2], {"gained": 5, "lost": 7, "examples": 2314})
    result = recommend([FP32, small], 0.5, "latency_bs1", max_bytes=200_000)
    assert result["method"] == "onnx_int4"
    assert result["reason"].endswith("max_bytes (195.3 KB) leaves out 1 of 2 rows, fp32 among them (390.6 KB).")


def test_report_json_markdown_and_tensorboard_carry_the_intervals(tmp_path):
    net, test, val = blobs_mlp(1, 2000, 600, 500)
    methods = {"int2_weight_only": METHODS["int2_weight_only"].make_settings({"group_size": None}), "fp16": None}
    writer = SummaryWriter(str(tmp_path / "tb"))
    quantization_report(
        net, methods, test, QuantizationData(example=test[0][0][:1]), tmp_path, FAST, writer, val_batches=val,
        budget=Budget(max_accuracy_drop=0.5, objective="size"),
    )  # fmt: skip
    writer.close()
    report = json.loads((tmp_path / "report.json").read_text())
    for r in report["methods"]:
        for split, key, examples in (("test", "accuracy_delta", 600), ("val", "val_accuracy_delta", 500)):
            paired = r["paired"][split]
            assert paired["examples"] == examples
            assert r[key] == pytest.approx(100 * (paired["gained"] - paired["lost"]) / examples)  # the same counts
            assert r[f"{key}_ci"] == pytest.approx(list(paired_interval(**paired)))
            assert r[f"{key}_ci"][0] <= r[key] <= r[f"{key}_ci"][1]
    int2 = next(r for r in report["methods"] if r["method"] == "int2_weight_only")
    assert int2["paired"]["test"]["lost"] > int2["paired"]["test"]["gained"]  # 2-bit weights lose examples
    assert report["recommendation"]["rule"].startswith("a row is over budget only when its whole 95 %")
    markdown = (tmp_path / "report.md").read_text()
    assert "## Accuracy against fp32, with 95 % intervals" in markdown
    assert f"Budget rule: {report['recommendation']['rule']}." in markdown
    assert "| fp32 | +0.00 | +0.00 to +0.00 | 0 / 0 of 500 | +0.00 | +0.00 to +0.00 | 0 / 0 of 600 | no |" in markdown
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    assert "quant/intervals/text_summary" in events.Tags()["tensors"]
    hparams = EventAccumulator(str(tmp_path / "tb" / "quant_hparams" / "int2_weight_only"))
    hparams.Reload()
    assert {"quant/val_accuracy_delta_ci_low", "quant/accuracy_delta_ci_high"} <= set(hparams.Tags()["scalars"])
    assert {"accuracy_delta_ci", "val_accuracy_delta_ci", "paired"} <= set(_CARD_KEYS)  # the model card's keys


def test_cli_max_bytes_below_every_row_writes_no_bundle(tmp_path, capsys):
    corpus = write_text_corpus(tmp_path / "corpus.csv", n=160)
    quant = [
        "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[onnx_dynamic_int8]",
        "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.01",
    ]  # fmt: skip
    args = text_args(corpus, tmp_path, *quant)
    assert main(["fit", *args, "--trainer.max_epochs", "1"]) is None
    ckpt = str(tmp_path / "ckpt" / "last.ckpt")
    with pytest.warns(UserWarning, match=r"No deployable bundle written: No recommendation: no row ships at most 10 B"):
        assert main(["quantize", *args, "--ckpt_path", ckpt, "--max_bytes", "10"]) is None
    folder = tmp_path / "text_mlp" / "version_1" / "quantization"
    report = json.loads((folder / "report.json").read_text())
    assert report["recommendation"]["method"] is None and report["deployment"] is None
    assert not (folder / "bundle").exists()
    assert "## No recommendation" in (folder / "report.md").read_text()
