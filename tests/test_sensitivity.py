"""Per-layer sensitivity and the greedy fp32 fallback, checked against models quantized by hand."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest
import torch
from torch import nn

from quantization import QuantizationData, quantize
from quantization.decide.sensitivity import fallback, layer_sensitivity, most_sensitive_first, sqnr_db
from quantization.registry import METHODS
from tests.helpers import ResidualNet

STEP = 2.0**-7  # fixed_scale_int8's default grid: round(v * 128) clamped to [-128, 127]


def saturating_net() -> nn.Sequential:
    """Three Linear layers; the middle one's weights (up to ~2) lie far past fixed_scale_int8's +-127/128."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 4)).eval()
    with torch.no_grad():
        model[2].weight.mul_(20)
    return model


def by_hand(model: nn.Sequential, layers: list[str]) -> nn.Sequential:
    """``model`` with ``layers`` on fixed_scale_int8's grid, weights and biases saturating at int8."""
    quantized = copy.deepcopy(model)
    with torch.no_grad():
        for name in layers:
            for param in quantized.get_submodule(name).parameters():
                param.copy_(torch.round(param / STEP).clamp(-128, 127) * STEP)
    return quantized


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(256, 64, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def batches(inputs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    labels = saturating_net()(inputs).argmax(dim=1)  # fp32 is right on every sample: a drop is a disagreement
    return [(inputs[:128], labels[:128]), (inputs[128:], labels[128:])]


@pytest.fixture(scope="module")
def data(inputs) -> QuantizationData:
    return QuantizationData(example=inputs[:1], calibration=[inputs[:128]])


def drop_by_hand(model: nn.Sequential, layers: list[str], batches) -> float:
    """Points lost against labels fp32 gets all right: 100 * the share of samples whose prediction changes."""
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    with torch.no_grad():
        return float((by_hand(model, layers)(x).argmax(dim=1) != y).double().mean()) * 100


def test_sensitivity_rows_match_the_layer_quantized_by_hand(batches, data, inputs):
    model = saturating_net()
    rows = layer_sensitivity(model, "fixed_scale_int8", None, data, batches)

    assert [row["layer"] for row in rows] == ["0", "2", "4"]
    assert [row["parameters"] for row in rows] == [64 * 96, 96 * 48, 48 * 4]
    with torch.no_grad():
        reference = model(inputs).double().numpy()
        for row in rows:
            logits = by_hand(model, [row["layer"]])(inputs).double().numpy()
            # Same values, same F.linear: the artifact's logits are these, bit for bit (float64 sums only).
            expected = 10 * np.log10((reference**2).sum() / ((logits - reference) ** 2).sum())
            assert row["sqnr_db"] == pytest.approx(expected, rel=1e-12)
            assert row["accuracy_drop"] == pytest.approx(drop_by_hand(model, [row["layer"]], batches), abs=1e-9)
            assert row["accuracy"] == pytest.approx(1 - row["accuracy_drop"] / 100, abs=1e-12)
    # The saturating layer loses most: ~10 dB against ~31-34 dB for the layers on the grid.
    assert most_sensitive_first(rows)[0]["layer"] == "2"


def test_most_sensitive_first_breaks_accuracy_ties_by_sqnr():
    rows = [
        {"layer": "a", "accuracy_drop": 0.0, "sqnr_db": math.inf},
        {"layer": "b", "accuracy_drop": 0.4, "sqnr_db": 35.0},
        {"layer": "c", "accuracy_drop": 0.4, "sqnr_db": 21.0},
        {"layer": "d", "accuracy_drop": -0.4, "sqnr_db": 15.0},
    ]
    assert [row["layer"] for row in most_sensitive_first(rows)] == ["c", "b", "a", "d"]


def test_sqnr_is_infinite_when_nothing_changes_and_equal_to_its_definition():
    assert sqnr_db(torch.ones(2, 3), torch.ones(2, 3)) == math.inf
    # signal 1 + 4 = 5, noise 0.1^2 + 0.2^2 = 0.05: 10 log10(100) = 20 dB
    assert sqnr_db(torch.tensor([1.0, -2.0]), torch.tensor([1.1, -2.2])) == pytest.approx(20.0, rel=1e-6)


def test_fallback_keeps_the_saturating_layer_and_fits(batches, data):
    model = saturating_net()
    rows = layer_sensitivity(model, "fixed_scale_int8", None, data, batches)
    everything, all_but_2 = drop_by_hand(model, ["0", "2", "4"], batches), drop_by_hand(model, ["0", "4"], batches)
    assert all_but_2 < everything  # so a budget between them is met by keeping layer 2 alone
    budget = (everything + all_but_2) / 2

    result = fallback(model, "fixed_scale_int8", None, data, batches, budget, rows)

    assert result["fits"] and result["keep_fp32"] == ["2"]
    assert result["accuracy_drop"] == pytest.approx(all_but_2, abs=1e-9)
    assert [step["keep_fp32"] for step in result["tried"]] == [[], ["2"]]
    assert result["tried"][0]["accuracy_drop"] == pytest.approx(everything, abs=1e-9)
    assert result["kept_weight_fraction"] == pytest.approx(96 * 48 / (64 * 96 + 96 * 48 + 48 * 4))
    assert "with 1 of 3 layers in fp32 (2:" in result["summary"]

    # The kept configuration is a plain keep_fp32 run: quantizing with it again gives the same model.
    artifact = quantize(model, "fixed_scale_int8", QuantizationData(data.example, keep_fp32=frozenset({"2"})))
    x = torch.cat([b[0] for b in batches])
    with torch.no_grad():
        assert torch.equal(
            METHODS["fixed_scale_int8"].load(artifact.data, model, 1).logits(x), by_hand(model, ["0", "4"])(x)
        )


def test_fallback_quantizes_everything_when_the_budget_allows(batches, data):
    model = saturating_net()
    rows = layer_sensitivity(model, "fixed_scale_int8", None, data, batches)
    result = fallback(model, "fixed_scale_int8", None, data, batches, 100.0, rows)
    assert result["fits"] and result["keep_fp32"] == [] and len(result["tried"]) == 1
    assert result["kept_weight_fraction"] == 0.0


def test_fallback_says_when_only_fp32_fits(batches, data):
    # 2-bit weights (codes -1, 0, 1) err by ~50 % RMS per layer: each layer alone flips predictions, so no
    # quantized layer fits a budget of 0 points; keeping every layer is fp32 itself, not a fit.
    model = saturating_net()
    rows = layer_sensitivity(model, "int2_weight_only", None, data, batches)
    assert all(row["accuracy_drop"] > 0 for row in rows)

    result = fallback(model, "int2_weight_only", None, data, batches, 0.0, rows)

    ranked = [row["layer"] for row in most_sensitive_first(rows)]
    assert not result["fits"] and result["keep_fp32"] == ranked
    assert result["accuracy"] == 1.0 and result["accuracy_drop"] == 0.0 and result["kept_weight_fraction"] == 1.0
    assert [step["keep_fp32"] for step in result["tried"]] == [[], ranked[:1], ranked[:2]]
    assert all(step["accuracy_drop"] > 0 for step in result["tried"])
    assert result["summary"].startswith("int2_weight_only cannot stay within 0 points of fp32 with any layer quantized")


def test_onnx_sensitivity_on_sparse_batches_and_a_residual_net(inputs):
    model = ResidualNet().eval()
    x = inputs
    labels = model(x).argmax(dim=1)
    dense_batches = [(x[:128], labels[:128]), (x[128:], labels[128:])]
    sparse_batches = [(features.to_sparse(), y) for features, y in dense_batches]  # COO, as text batches come
    data = QuantizationData(example=x[:1], calibration=[x[:128]])

    rows = layer_sensitivity(model, "onnx_static_int8", None, data, sparse_batches)

    assert rows == layer_sensitivity(model, "onnx_static_int8", None, data, dense_batches)
    assert [row["layer"] for row in rows] == ["inp", "block.0", "head"]
    artifact = quantize(model, "onnx_static_int8", data)
    everything = METHODS["onnx_static_int8"].load(artifact.data, model, 1).logits(x)
    with torch.no_grad():
        total = sqnr_db(model(x), everything)
    # One layer's rounding is part of all three's: its logit noise is smaller, its SQNR higher.
    assert all(math.isfinite(row["sqnr_db"]) and row["sqnr_db"] > total for row in rows)


def test_settings_may_be_plain_values(batches, data):
    model = saturating_net()
    from_values = layer_sensitivity(model, "fixed_scale_int8", {"bits": 5}, data, batches)
    from_dataclass = layer_sensitivity(
        model, "fixed_scale_int8", METHODS["fixed_scale_int8"].settings(5), data, batches
    )
    assert from_values == from_dataclass
    assert from_values != layer_sensitivity(model, "fixed_scale_int8", None, data, batches)  # 7 bits


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m, d, b, r: fallback(m, "fixed_scale_int8", None, d, b, -1.0, r), r"`max_accuracy_drop`.*got -1\.0"),
        (
            lambda m, d, b, r: fallback(m, "fixed_scale_int8", None, d, b, 1.0, r[:2]),
            r"Expected `sensitivity_rows` for the model's nn.Linear layers \('0', '2', '4'\), got \('0', '2'\)",
        ),
        (lambda m, d, b, r: layer_sensitivity(m, "int3", None, d, b), r"Expected `methods` to be a list of"),
        (lambda m, d, b, r: layer_sensitivity(m, "fp16", None, d, []), r"at least one \(x, y\) batch"),
    ],
    ids=["budget", "rows", "method", "batches"],
)
def test_arguments_are_refused_in_one_line(call, match, batches, data):
    model = saturating_net()
    rows = [{"layer": name, "accuracy_drop": 0.0, "sqnr_db": 40.0 - len(name)} for name in ("0", "2", "4")]
    with pytest.raises(ValueError, match=match):
        call(model, data, batches, rows)
