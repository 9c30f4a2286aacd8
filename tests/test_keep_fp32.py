"""``QuantizationData.keep_fp32``: every registered method leaves the named Linear layers in fp32, in the
artifact (payload spec, ONNX graph) and in the logits."""

from __future__ import annotations

import warnings

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from quantization import METHODS, QuantizationData, load_artifact, quantize, save_artifact
from quantization.artifacts.onnx_runtime import LINEAR_OPS, export_onnx, linear_nodes
from quantization.artifacts.torch_artifact import read_payload
from quantization.candidates.swap import linear_layers
from tests.helpers import ResidualNet

# ONNX Runtime sums a Gemm's K products in another order than torch: each of a layer's dot products of
# K <= 96 terms may differ by K * 2**-24 of sum |w x| (Higham's gamma_K, 6e-6 relative); the errors
# pass through three layers: 2e-5 of the largest logit. Torch artifacts of kept layers are bit-exact.
ONNX_ROUNDING = 2e-5


def three_layer_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 96), nn.ReLU(), nn.Linear(96, 48), nn.ReLU(), nn.Linear(48, 4)).eval()


NETS = [three_layer_net, ResidualNet]
NET_IDS = ["three_layer", "residual"]


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(64, 64, generator=torch.Generator().manual_seed(1))


def data_keeping(inputs: torch.Tensor, keep: set[str] | frozenset[str]) -> QuantizationData:
    return QuantizationData(example=inputs[:1], calibration=[inputs[:32], inputs[32:]], keep_fp32=frozenset(keep))


def logits_keeping(model: nn.Module, method: str, inputs: torch.Tensor, keep: set[str]) -> torch.Tensor:
    artifact = quantize(model, method, data_keeping(inputs, keep))
    return METHODS[method].load(artifact.data, model, 1).logits(inputs)


def fp32_linear_weights(data: bytes) -> set[tuple[int, ...]]:
    """Sorted shapes of the fp32 2-D weights that a Gemm or MatMul of an ONNX artifact reads."""
    graph = onnx.load_from_string(data).graph
    floats = {i.name: tuple(sorted(i.dims)) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT}
    return {floats[n.input[1]] for n in graph.node if n.op_type in LINEAR_OPS and len(floats.get(n.input[1], ())) == 2}


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
@pytest.mark.parametrize("make", NETS, ids=NET_IDS)
def test_keeping_every_layer_gives_the_fp32_logits(method, make, inputs):
    model = make()
    with torch.no_grad():
        reference = model(inputs)  # (64, 4)
    logits = logits_keeping(model, method, inputs, set(linear_layers(model)))
    if METHODS[method].suffix == ".pt":
        assert torch.equal(logits, reference)
    else:
        assert float((logits - reference).abs().max()) <= ONNX_ROUNDING * float(reference.abs().max())


@pytest.mark.parametrize("method", list(METHODS), ids=list(METHODS))
@pytest.mark.parametrize("make", NETS, ids=NET_IDS)
def test_keeping_one_layer_is_closer_to_fp32_and_stores_it_in_fp32(method, make, inputs):
    model = make()
    kept = next(iter(linear_layers(model)))  # the first layer: 21-63 % of the logits' squared error here
    with torch.no_grad():
        reference = model(inputs)
    all_error = float((logits_keeping(model, method, inputs, set()) - reference).square().sum())
    kept_error = float((logits_keeping(model, method, inputs, {kept}) - reference).square().sum())
    # Its rounding error is gone and the others' remain: independent errors add in quadrature, so the total shrinks.
    assert kept_error < all_error or all_error == kept_error == 0.0  # fp32: nothing to remove

    artifact = quantize(model, method, data_keeping(inputs, {kept}))
    weight = linear_layers(model)[kept].weight.detach()
    if artifact.suffix == ".pt":
        payload = read_payload(artifact.data)
        assert {name for name, spec in payload["layers"].items() if spec.get("kept_fp32")} == {kept}
        assert torch.equal(payload["state"][f"{kept}.weight"], weight)  # stored as trained, fp32
    else:
        assert fp32_linear_weights(artifact.data) == {tuple(sorted(weight.shape))}  # every other layer quantized
    assert artifact.info["kept_fp32_layers"] == 1


@pytest.mark.parametrize("method", [m for m in METHODS if METHODS[m].suffix == ".pt"])
def test_flat_artifact_with_a_kept_layer_loads_without_its_model(method, inputs, tmp_path):
    model = three_layer_net()
    path = save_artifact(quantize(model, method, data_keeping(inputs, {"2"})), tmp_path)
    with_model = METHODS[method].load(path.read_bytes(), model, 1).logits(inputs)
    assert torch.equal(load_artifact(path).logits(inputs), with_model)
    assert type(load_artifact(path).module[2]) is nn.Linear


def test_dynamic_int8_keeping_layers_matches_torch_quantize_dynamic_by_name(inputs):
    model = three_layer_net()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation, deliberately
        reference = torch.ao.quantization.quantize_dynamic(model, {"0", "4"}, dtype=torch.qint8)(inputs)
    assert torch.equal(logits_keeping(model, "dynamic_int8", inputs, {"2"}), reference)


@pytest.mark.parametrize("method", ["weight_only_int8", "onnx_static_int8"])
@pytest.mark.parametrize(
    ("keep", "match"),
    [
        ({"3"}, r"Expected `keep_fp32` to name nn.Linear layers of the model \('0', '2', '4'\), got '3'\."),
        ({"2", "fc"}, r"got 'fc'\."),
        ("2", r"Expected `keep_fp32` to be a set of layer names, got the string '2'\."),
    ],
    ids=["activation", "unknown", "string"],
)
def test_keep_fp32_names_only_linear_layers(method, keep, match, inputs):
    data = QuantizationData(example=inputs[:1], calibration=[inputs], keep_fp32=keep)
    with pytest.raises(ValueError, match=match):
        quantize(three_layer_net(), method, data)


class ThreeDimensional(nn.Module):
    """A Linear on a ``(B, 4, 16)`` input: exported as ``MatMul`` (+ ``Add``) with a folded, renamed weight."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.tokens = nn.Linear(16, 8)
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.tokens(x.view(-1, 4, 16))).flatten(1))  # (B, 64) -> (B, 4, 8) -> (B, 4)


def test_onnx_nodes_of_a_linear_are_found_by_weight_or_scope(inputs):
    graph = onnx.load_from_string(export_onnx(ThreeDimensional(), inputs[:1])).graph
    names = {node.name: node for node in graph.node}
    found = linear_nodes(graph, ["tokens", "head"])
    assert names[found["tokens"][0]].op_type == "MatMul" and found["head"] == ["/head/Gemm"]
    with pytest.raises(RuntimeError, match=r"no ONNX node of nn.Linear 'missing'.*use a torch method"):
        linear_nodes(graph, ["missing"])


@pytest.mark.parametrize("method", ["onnx_dynamic_int8", "onnx_static_int8"])
def test_onnx_keeps_a_linear_exported_as_matmul(method, inputs):
    model = ThreeDimensional().eval()
    artifact = quantize(model, method, data_keeping(inputs, {"tokens"}))
    graph = onnx.load_from_string(artifact.data).graph
    floats = [numpy_helper.to_array(i) for i in graph.initializer if i.data_type == onnx.TensorProto.FLOAT]
    assert any(array.shape == (16, 8) for array in floats)  # the transposed tokens weight, fp32
    assert fp32_linear_weights(artifact.data) == {(8, 16)}
