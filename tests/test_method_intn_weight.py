"""The 2-8 bit weight-only family: dense packing, the artifact's weights against ``fake_quantize``,
group padding, settings, weights-only artifacts and their size."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from quantization import METHODS, QuantizationData, load_artifact, quantize, save_artifact
from quantization.methods._intn_weight import IntNWeightLinear, fake_quantize, group_scales, levels
from quantization.methods._packing import pack, packed_bytes, unpack

INTN = {"int4_weight_only": 4, "int3_weight_only": 3, "int2_weight_only": 2}
GROUPS = [None, 8, 16, 32, 128]
SCALES = ["absmax", "mse", "fixed"]


def linear(in_features: int, out_features: int, seed: int = 0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(in_features, out_features).eval()


def loaded_layer(artifact_data: bytes, method: str) -> IntNWeightLinear:
    layer = METHODS[method].load(artifact_data, None, 1).module  # a single nn.Linear loads with no model
    assert isinstance(layer, IntNWeightLinear)
    return layer


@pytest.mark.parametrize("bits", range(1, 9), ids=lambda b: f"{b}bit")
@pytest.mark.parametrize("numel", [0, 1, 7, 8, 9, 13, 1001], ids=lambda n: f"n{n}")
def test_pack_round_trip_is_exact_and_dense(bits, numel):
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    values = torch.randint(low, high + 1, (numel,), generator=torch.Generator().manual_seed(numel))
    if numel >= 2:
        values[:2] = torch.tensor([low, high])  # both ends of the range
    packed = pack(values, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == math.ceil(numel * bits / 8) == packed_bytes(numel, bits)
    assert torch.equal(unpack(packed, bits, numel), values.to(torch.int8))


def test_pack_reads_any_shape_flat():
    values = torch.arange(-8, 8).view(4, 4)
    assert torch.equal(unpack(pack(values, 4), 4, 16).view(4, 4), values.to(torch.int8))


@pytest.mark.parametrize(("bits", "per_byte"), [(4, 2), (2, 4), (1, 8)], ids=["4bit", "2bit", "1bit"])
def test_widths_dividing_a_byte_fill_it_low_bits_first(bits, per_byte):
    values = torch.randint(-(2 ** (bits - 1)), 2 ** (bits - 1), (per_byte * 5,), generator=torch.Generator())
    codes = (values + 2 ** (bits - 1)).view(-1, per_byte)  # offset binary
    expected = sum(codes[:, i] << (bits * i) for i in range(per_byte))
    assert pack(values, bits).tolist() == expected.tolist()


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: pack(torch.tensor([8]), 4), r"Expected 4-bit values in \[-8, 7\], got 8"),
        (lambda: pack(torch.tensor([-3]), 2), r"Expected 2-bit values in \[-2, 1\], got -3"),
        (lambda: pack(torch.tensor([0.5]), 4), r"Expected integer values to pack, got torch.float32"),
        (lambda: pack(torch.tensor([0]), 9), r"Expected `bits` in \[1, 8\], got 9"),
        (lambda: unpack(torch.zeros(3, dtype=torch.uint8), 4, 8), r"Expected 4 packed uint8 bytes for 8 4-bit values"),
        (lambda: unpack(torch.zeros(4, dtype=torch.int8), 4, 8), r"got \(4,\) torch.int8"),
    ],
    ids=["above", "below", "float", "bits", "length", "dtype"],
)
def test_packing_refuses_what_it_cannot_store(call, match):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize("method", list(INTN), ids=list(INTN))
@pytest.mark.parametrize("group_size", GROUPS, ids=[f"g{g}" for g in GROUPS])
@pytest.mark.parametrize("in_features", [64, 100], ids=["in64", "in100"])  # 100: no group size divides it
@pytest.mark.parametrize("scale", SCALES)
def test_artifact_weights_equal_fake_quantize_bit_for_bit(method, group_size, in_features, scale):
    layer = linear(in_features, 7)
    settings = {"group_size": group_size, "scale": scale, "fixed_exponent": 4}
    artifact = quantize(layer, method, QuantizationData(torch.zeros(1, in_features)), settings)
    loaded = loaded_layer(artifact.data, method)
    expected = fake_quantize(layer.weight, INTN[method], group_size, scale, fixed_exponent=4)
    assert torch.equal(loaded.weight, expected)
    # what quantization-aware training trains through is the same function of the same settings
    assert torch.equal(METHODS[method].fake_quantize(layer.weight, METHODS[method].make_settings(settings)), expected)
    x = torch.randn(5, in_features)
    assert torch.equal(
        METHODS[method].load(artifact.data, None, 1).logits(x), nn.functional.linear(x, expected, layer.bias)
    )


@pytest.mark.parametrize("bits", range(2, 9), ids=lambda b: f"{b}bit")
@pytest.mark.parametrize("group_size", GROUPS, ids=[f"g{g}" for g in GROUPS])
def test_fake_quantize_errs_by_at_most_half_a_step(bits, group_size):
    weight = linear(100, 6).weight.detach() * torch.logspace(-3, 1, 6).unsqueeze(1)  # rows of very different ranges
    scales = group_scales(weight, bits, group_size).float()
    per_column = scales.repeat_interleave(group_size or 100, dim=1)[:, :100]
    error = (fake_quantize(weight, bits, group_size) - weight).abs()
    assert bool((error <= per_column * 0.502).all())  # s/2 (bf16 scales clip < s/4), plus fp32 division's rounding
    assert len(torch.unique(torch.round(fake_quantize(weight, bits, group_size) / per_column))) <= 2 * levels(bits) + 1


def test_fake_quantize_is_straight_through():
    weight = linear(40, 3).weight.detach().clone().requires_grad_(True)
    fake_quantize(weight, 3, 16).pow(2).sum().backward()
    # d/dw of sum(w_hat^2) with d w_hat / d w = 1: 2 * w_hat, the gradient QAT needs
    assert torch.equal(weight.grad, 2 * fake_quantize(weight.detach(), 3, 16))


def test_last_group_is_padded_not_stored(tmp_path):
    weight = torch.cat([torch.full((2, 16), 0.7), torch.full((2, 4), 0.07)], dim=1)  # in=20, groups of 16
    layer = nn.Linear(20, 2)
    with torch.no_grad():
        layer.weight.copy_(weight)
    artifact = quantize(layer, "int4_weight_only", QuantizationData(torch.zeros(1, 20)), {"group_size": 16})
    state = torch.load(save_artifact(artifact, tmp_path), weights_only=True)["state"]  # a lone Linear is named ""
    assert state[".packed"].numel() == 2 * 20 * 4 // 8  # the 12 padding columns are not stored
    assert state[".scale"].shape == (2, 2)
    # the short group gets its own scale, from its 4 real columns (zero padding never raises an absmax)
    torch.testing.assert_close(state[".scale"].float(), torch.tensor([[0.1, 0.01]] * 2), rtol=2**-8, atol=0)
    torch.testing.assert_close(loaded_layer(artifact.data, "int4_weight_only").weight, weight, rtol=2**-8, atol=0)


@pytest.mark.parametrize("group_size", [64, 100, 128], ids=["equal", "above", "power"])
def test_a_group_as_wide_as_the_row_is_per_channel(group_size):
    weight = linear(64, 5).weight
    assert torch.equal(fake_quantize(weight, 3, group_size), fake_quantize(weight, 3, None))


def test_an_all_zero_row_stays_zero():
    weight = torch.zeros(2, 32)
    weight[1] = torch.linspace(-1, 1, 32)
    quantized = fake_quantize(weight, 2, 16)
    assert torch.isfinite(quantized).all() and torch.equal(quantized[0], torch.zeros(32))


@pytest.mark.parametrize("method", list(INTN), ids=list(INTN))
@pytest.mark.parametrize(
    ("group_size", "match"),
    [
        (0, r"got 0"),
        (4, r"or an integer >= 8, got 4"),
        (-16, r"got -16"),
        ("32", r"got '32'"),
        (True, r"got True"),
        (16.0, r"got 16.0"),
    ],
    ids=["zero", "small", "negative", "string", "bool", "float"],
)
def test_group_size_is_validated(method, group_size, match):
    with pytest.raises(ValueError, match=rf"Expected `settings.{method}.group_size` to be null .*{match}"):
        quantize(linear(64, 4), method, QuantizationData(torch.zeros(1, 64)), {"group_size": group_size})


def test_unknown_setting_is_refused():
    keys = r"\(fixed_exponent, group_size, scale\)"
    with pytest.raises(ValueError, match=rf"Expected `settings.int4_weight_only` keys in {keys}, got 'bits'"):
        quantize(linear(64, 4), "int4_weight_only", QuantizationData(torch.zeros(1, 64)), {"bits": 3})


@pytest.mark.parametrize("method", list(INTN), ids=list(INTN))
def test_artifact_is_plain_data_and_loads_without_the_model(method, tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(30, 20), nn.ReLU(), nn.Linear(20, 3)).eval()
    artifact = quantize(net, method, QuantizationData(torch.zeros(1, 30)))
    path = save_artifact(artifact, tmp_path)
    payload = torch.load(path, weights_only=True)  # no code unpickled
    group_size = METHODS[method].settings().group_size
    assert payload["settings"] == {"group_size": group_size, "scale": "absmax", "fixed_exponent": 7}
    assert (payload["layers"]["0"]["bits"], payload["layers"]["0"]["group_size"]) == (
        INTN[method],
        32 if method != "int2_weight_only" else 16,
    )
    assert {k: v.dtype for k, v in payload["state"].items() if k.startswith("0.")} == {
        "0.packed": torch.uint8,
        "0.scale": torch.bfloat16,
        "0.bias": torch.float32,
    }
    x = torch.randn(4, 30)
    assert torch.equal(load_artifact(path).logits(x), METHODS[method].load(artifact.data, net, 1).logits(x))


@pytest.mark.parametrize(
    ("method", "group_size"),
    list(itertools.product(INTN, [None, 16, 32, 128])),
    ids=[f"{m}-g{g}" for m, g in itertools.product(INTN, [None, 16, 32, 128])],
)
def test_size_is_bits_per_weight_plus_scales(method, group_size):
    bits, layer = INTN[method], linear(784, 10)
    data = QuantizationData(torch.zeros(1, 784))
    size = quantize(layer, method, data, {"group_size": group_size}).size_bytes
    groups = 1 if group_size is None else math.ceil(784 / group_size)
    tensors = math.ceil(7840 * bits / 8) + 10 * groups * 2 + 10 * 4  # packed codes, bf16 scales, fp32 bias
    fp32 = quantize(layer, "fp32", data).size_bytes
    overhead = fp32 - 7850 * 4  # the payload's own bytes (names, specs), about the same for every method
    assert tensors < size <= tensors + overhead + 512


def test_int4_in_groups_of_32_is_over_six_and_a_half_times_smaller_on_the_text_mlp():
    torch.manual_seed(0)
    sizes = [5000, 512, 256, 128, 64, 2]
    layers = [m for a, b in itertools.pairwise(sizes) for m in (nn.Linear(a, b), nn.ReLU())][:-1]
    net, data = nn.Sequential(*layers).eval(), QuantizationData(torch.zeros(1, 5000))
    ratio = quantize(net, "fp32", data).size_bytes / quantize(net, "int4_weight_only", data).size_bytes
    assert ratio >= 6.5  # 4 bits + 16/32 bits of scale per weight: 32 / 4.5 = 7.1x at most


@pytest.mark.parametrize("bits", range(2, 9), ids=lambda b: f"{b}bit")
def test_any_width_from_2_to_8_bits(bits, tmp_path):
    layer, data = linear(100, 6), QuantizationData(torch.zeros(1, 100))
    settings = {"bits": bits, "group_size": 16, "scale": "mse"}
    artifact = quantize(layer, "intn_weight_only", data, settings)
    assert torch.equal(
        loaded_layer(artifact.data, "intn_weight_only").weight, fake_quantize(layer.weight, bits, 16, "mse")
    )
    payload = torch.load(save_artifact(artifact, tmp_path), weights_only=True)
    assert payload["state"][".packed"].numel() == math.ceil(600 * bits / 8)  # densely packed, whatever the width
    preset = {2: "int2_weight_only", 3: "int3_weight_only", 4: "int4_weight_only"}.get(bits)
    if preset:  # the presets are this method at their width
        same = quantize(layer, preset, data, {"group_size": 16, "scale": "mse"})
        assert torch.equal(
            loaded_layer(same.data, preset).weight, loaded_layer(artifact.data, "intn_weight_only").weight
        )


@pytest.mark.parametrize("bits", [2, 3, 4, 8], ids=lambda b: f"{b}bit")
@pytest.mark.parametrize("group_size", [None, 16], ids=["channel", "g16"])
def test_mse_scales_never_err_more_than_absmax(bits, group_size):
    weight = linear(200, 16).weight.detach() * torch.logspace(-2, 1, 16).unsqueeze(1)
    weight[:, 0] *= 6  # an outlier column: absmax wastes the grid on it
    error = {
        rule: (fake_quantize(weight, bits, group_size, rule) - weight).square().sum(1) for rule in ("absmax", "mse")
    }
    assert bool((error["mse"] <= error["absmax"]).all())  # absmax is one of the ratios searched
    if bits <= 3 and group_size is None:  # a 6x outlier sets each row's absmax: half the step or less is better
        assert float(error["mse"].sum()) < 0.8 * float(error["absmax"].sum())


def test_fixed_scale_is_one_step_everywhere_and_reports_saturation():
    layer = nn.Linear(4, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, -0.2, 0.9, 0.05], [0.0, 0.3, -0.3, 0.12]]))
    settings = {"bits": 4, "group_size": None, "scale": "fixed", "fixed_exponent": 4}  # step 1/16, codes -7..7
    artifact = quantize(layer, "intn_weight_only", QuantizationData(torch.zeros(1, 4)), settings)
    expected = torch.tensor([[2, -3, 7, 1], [0, 5, -5, 2]]) / 16  # 0.9 saturates at 7/16; ties round to even
    assert torch.equal(loaded_layer(artifact.data, "intn_weight_only").weight, expected)
    assert artifact.info["saturated_fraction"] == 1 / 8


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"bits": 1}, r"`settings.intn_weight_only.bits` an integer in \[2, 8\], got 1"),
        ({"bits": 9}, r"got 9"),
        ({"scale": "minmax"}, r"`settings.intn_weight_only.scale` in \(absmax, mse, fixed\), got 'minmax'"),
        ({"fixed_exponent": 15}, r"`settings.intn_weight_only.fixed_exponent` in \[0, 14\], got 15"),
    ],
    ids=["bits1", "bits9", "scale", "exponent"],
)
def test_intn_settings_are_validated(settings, match):
    with pytest.raises(ValueError, match=match):
        quantize(linear(64, 4), "intn_weight_only", QuantizationData(torch.zeros(1, 64)), settings)
