"""``onnx_int4``: 4-bit weight blocks in ONNX Runtime, within the bound its arithmetic allows, and ~6x smaller."""

from __future__ import annotations

import logging
import sys

import onnx
import pytest
import torch
from onnx import helper, numpy_helper
from torch import nn

from quantization import METHODS, QuantizationData, check_methods, load_artifact, quantize, save_artifact
from quantization.artifacts.onnx_runtime import OrtRunner, export_onnx
from quantization.methods._onnx_matmul import gemms_to_matmuls, linear_gemms
from tests.helpers import ResidualNet

METHOD = METHODS["onnx_int4"]


def two_layer_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 4)).eval()


class ProjectedNet(nn.Module):
    """A bare parameter multiplied in ``forward`` (an ONNX ``MatMul``, not a Linear), then a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Parameter(torch.randn(64, 32) / 8)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x @ self.proj)  # (B, 64) -> (B, 32) -> (B, 4)


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(32, 64, generator=torch.Generator().manual_seed(1))


def relative_error(logits: torch.Tensor, reference: torch.Tensor) -> float:
    return float((logits - reference).abs().max() / reference.abs().max())


def op_types(data: bytes) -> list[str]:
    return [node.op_type for node in onnx.load_from_string(data).graph.node]


def nbits_attributes(data: bytes) -> list[dict[str, int]]:
    nodes = onnx.load_from_string(data).graph.node
    return [{a.name: a.i for a in node.attribute} for node in nodes if node.op_type == "MatMulNBits"]


def test_registered_as_an_onnx_method():
    assert "onnx_int4" in METHODS and check_methods(["onnx_int4"]) == ["fp32", "onnx_int4"]
    assert METHOD.suffix == ".onnx" and not METHOD.needs_calibration


@pytest.mark.parametrize(
    "settings",
    [{}, {"block_size": 16}, {"block_size": 32, "symmetric": False}, {"accuracy_level": 0}],
    ids=["default", "block16", "block32-asymmetric", "fp32-compute"],
)
@pytest.mark.parametrize(("make", "linears"), [(two_layer_net, 2), (ResidualNet, 3)], ids=["flat", "residual"])
def test_every_linear_is_4bit_within_the_error_bound(make, linears, settings, inputs):
    model = make().eval()
    artifact = quantize(model, "onnx_int4", QuantizationData(example=inputs[:1]), settings)
    with torch.no_grad():
        reference = model(inputs)  # (32, 4)
    logits = METHOD.load(artifact.data, model, 1).logits(inputs)

    assert relative_error(logits, reference) <= METHOD.max_relative_error
    assert artifact.info == {"int4_weight_fraction": 1.0, "int4_layers": linears, "fp32_layers": 0}
    ops = op_types(artifact.data)
    assert ops.count("MatMulNBits") == linears and "Gemm" not in ops
    if make is ResidualNet:
        assert "LayerNormalization" in ops and "Erf" in ops  # the non-Linear parts run as exported, in fp32
    chosen = METHOD.make_settings(settings)
    for attributes in nbits_attributes(artifact.data):
        assert attributes["bits"] == 4 and attributes["block_size"] == chosen.block_size
        assert attributes.get("accuracy_level", 0) == chosen.accuracy_level  # 0: the attribute is left unset


def test_artifact_is_four_bits_and_a_scale_per_block(inputs):
    """K = 256 and 64, multiples of the block (32): no padding. Each weight takes 4 bits, and each block of 32
    one fp32 scale (1 bit a weight): 5/32 of fp32. Biases stay fp32; the graph itself adds well under 1 KB."""
    model = nn.Sequential(nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 8)).eval()
    data = QuantizationData(example=torch.zeros(1, 256))
    artifact = quantize(model, "onnx_int4", data, {"block_size": 32})
    weights = 256 * 64 + 64 * 8  # 16,896
    expected = weights * 4 // 8 + (weights // 32) * 4 + (64 + 8) * 4  # codes + scales + biases = 11,376 bytes
    assert expected <= artifact.size_bytes < expected + 1024
    fp32_size = quantize(model, "fp32", data).size_bytes  # > 4 * 16,896 = 67,584 bytes
    assert artifact.size_bytes < fp32_size / 5.5


def test_layer_too_small_for_a_block_stays_fp32_and_info_says_so(inputs):
    """K = 4 pads to one 32-value block per output: 64 * (16 + 4) = 1,280 bytes, more than its 4 * 4 * 64 = 1,024
    fp32 bytes, so that layer stays fp32; the 64 -> 2 layer (128 of the 384 weights) is 4-bit."""
    model = nn.Sequential(nn.Linear(4, 64), nn.ReLU(), nn.Linear(64, 2)).eval()
    x = inputs[:, :4]
    data = QuantizationData(example=x[:1])
    artifact = quantize(model, "onnx_int4", data, {"block_size": 32})

    assert artifact.info == {"int4_weight_fraction": pytest.approx(128 / 384), "int4_layers": 1, "fp32_layers": 1}
    assert op_types(artifact.data) == ["Gemm", "Relu", "MatMulNBits", "Add"]
    with torch.no_grad():
        reference = model(x)
    assert relative_error(METHOD.load(artifact.data, model, 1).logits(x), reference) <= METHOD.max_relative_error
    assert artifact.size_bytes < quantize(model, "fp32", data).size_bytes


def test_only_linear_weights_are_quantized(inputs):
    model = ProjectedNet().eval()
    artifact = quantize(model, "onnx_int4", QuantizationData(example=inputs[:1]))
    graph = onnx.load_from_string(artifact.data).graph
    matmul = next(node for node in graph.node if node.op_type == "MatMul")  # x @ proj, as exported
    weight = next(init for init in graph.initializer if init.name == matmul.input[1])
    torch.testing.assert_close(torch.from_numpy(numpy_helper.to_array(weight).copy()), model.proj.detach())
    assert artifact.info == {"int4_weight_fraction": 1.0, "int4_layers": 1, "fp32_layers": 0}


def test_gemm_rewrite_keeps_fp32_logits(inputs):
    model = ResidualNet().eval()
    exported = onnx.load_from_string(export_onnx(model, inputs[:1]))
    gemms = linear_gemms(exported.graph)
    assert [(g.in_features, g.out_features) for g in gemms] == [(64, 96), (96, 96), (96, 4)]
    names = gemms_to_matmuls(exported, gemms)
    onnx.checker.check_model(exported)
    assert len(names) == 3 and "Gemm" not in [node.op_type for node in exported.graph.node]
    assert not {"inp.weight", "block.0.weight", "head.weight"} & {init.name for init in exported.graph.initializer}
    with torch.no_grad():
        reference = model(inputs)
    torch.testing.assert_close(OrtRunner(exported.SerializeToString()).logits(inputs), reference)


def test_gemm_with_untransposed_weight_or_scaling_is_left_alone():
    weight = numpy_helper.from_array(torch.ones(3, 2).numpy(), "w")
    nodes = [
        helper.make_node("Gemm", ["x", "w"], ["a"], name="plain", transB=0),
        helper.make_node("Gemm", ["x", "w"], ["b"], name="scaled", alpha=2.0),
        helper.make_node("Gemm", ["x", "y"], ["c"], name="two_inputs"),
    ]
    graph = helper.make_graph(nodes, "g", [], [], [weight])
    assert [(g.node, g.in_features, g.out_features) for g in linear_gemms(graph)] == [("plain", 3, 2)]


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"block_size": 48}, r"Expected `block_size` in \(16, 32, 64, 128, 256\), got 48\."),
        ({"block_size": 512}, r"Expected `block_size` in \(16, 32, 64, 128, 256\), got 512\."),
        ({"block_size": 32.0}, r"Expected `block_size` in \(16, 32, 64, 128, 256\), got 32\.0\."),
        ({"symmetric": "yes"}, r"Expected `symmetric` to be true or false, got 'yes'\."),
        ({"accuracy_level": 5}, r"Expected `accuracy_level` in \(0, 1, 2, 3, 4\), got 5\."),
        ({"accuracy_level": True}, r"Expected `accuracy_level` in \(0, 1, 2, 3, 4\), got True\."),
        ({"bits": 3}, r"Expected `settings.onnx_int4` keys in \(accuracy_level, block_size, symmetric\), got 'bits'"),
    ],
    ids=["block-not-power-of-2", "block-too-large", "block-float", "symmetric", "level", "level-bool", "key"],
)
def test_settings_are_validated(settings, match, inputs):
    with pytest.raises(ValueError, match=match):
        quantize(two_layer_net(), "onnx_int4", QuantizationData(example=inputs[:1]), settings)


def test_round_trip_through_a_file_needs_only_onnx_runtime(inputs, tmp_path):
    model = two_layer_net()
    artifact = quantize(model, "onnx_int4", QuantizationData(example=inputs[:1]))
    path = save_artifact(artifact, tmp_path)
    assert path.name == "onnx_int4.onnx" and path.read_bytes() == artifact.data
    measured = METHOD.load(artifact.data, model, 1).logits(inputs)
    assert torch.equal(load_artifact(path).logits(inputs), measured)


def test_quantizer_import_leaves_root_logging_alone(monkeypatch, inputs):
    """ONNX Runtime's quantizer module calls ``logging.basicConfig(level=INFO)`` when it is imported."""
    monkeypatch.delitem(sys.modules, "onnxruntime.quantization.matmul_nbits_quantizer", raising=False)
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.WARNING)
    quantize(two_layer_net(), "onnx_int4", QuantizationData(example=inputs[:1]))
    assert logging.root.handlers == [] and logging.root.level == logging.WARNING
