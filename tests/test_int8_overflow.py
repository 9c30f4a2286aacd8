"""int8 artifacts are exact on every x86 CPU, whichever CPU runs this test.

On AVX2 without VNNI, ONNX Runtime sums pairs of u8 x s8 products in int16 with saturation;
VNNI/AMX CPUs do not. The real run below cannot show saturation on a VNNI machine, so the
artifact's own quantized activations and weights are replayed with AVX2's arithmetic too.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from quantization import METHODS, QuantizationData, quantize
from quantization.artifacts.int8_overflow import INT16_MAX, avx2_saturation, avx2_u8s8_matmul, integer_matmuls

ONNX_INT8 = [name for name in METHODS if name.startswith("onnx_") and name.endswith("int8")]
INT8 = [name for name in METHODS if "int8" in name]


def saturating_case() -> tuple[nn.Module, torch.Tensor, QuantizationData]:
    """A net and inputs where u8 x s8 pair sums overflow int16: large non-negative activations
    (as TF-IDF rows or ReLU outputs give) meet weights that quantize to the full [-127, 127]."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 4)).eval()
    x = torch.rand(64, 64, generator=torch.Generator().manual_seed(1)) * 4  # (64, 64) in [0, 4)
    return net, x, QuantizationData(example=x[:1], calibration=[x[:32], x[32:]])


def test_emulated_avx2_matmul_saturates_pairs_like_vpmaddubsw():
    rng = np.random.default_rng(0)
    small_a = rng.integers(0, 64, size=(3, 7), dtype=np.uint8)  # pairs stay below 2 * 63 * 127 < 32767
    w = rng.integers(-127, 128, size=(7, 5), dtype=np.int8)
    np.testing.assert_array_equal(avx2_u8s8_matmul(small_a, w), small_a.astype(np.int64) @ w.astype(np.int64))
    a = np.array([[255, 255, 255, 1]], dtype=np.uint8)
    w = np.array([[127, -127], [127, -127], [3, 3], [0, 0]], dtype=np.int8)
    # pair (0, 1): 64770 -> 32767 and -64770 -> -32768; pair (2, 3): 765 + 0, exact
    assert avx2_u8s8_matmul(a, w).tolist() == [[32767 + 765, -32768 + 765]]


@pytest.mark.parametrize("method", ONNX_INT8, ids=ONNX_INT8)
def test_full_range_int8_weights_saturate_under_avx2(method):
    """The control: with full-range weights (ONNX Runtime's default) this case does overflow."""
    net, x, data = saturating_case()
    artifact = quantize(net, method, data, {"weights": "int8", "per_channel": False})
    assert artifact.info["avx2_worst_pair_sum"] > INT16_MAX
    shares = avx2_saturation(artifact.data, {"x": x.numpy()})
    assert max(shares.values()) > 0.01, shares


@pytest.mark.parametrize("weights", ["int7", "uint8"])
@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("method", ONNX_INT8, ids=ONNX_INT8)
def test_onnx_int8_never_saturates(method, weights, per_channel):
    net, x, data = saturating_case()
    artifact = quantize(net, method, data, {"weights": weights, "per_channel": per_channel})
    model = onnx.load_from_string(artifact.data)
    assert len(integer_matmuls(model)) == 2  # both Linear layers run in integer arithmetic
    assert artifact.info["avx2_worst_pair_sum"] <= INT16_MAX
    assert set(avx2_saturation(artifact.data, {"x": x.numpy()}).values()) == {0.0}


@pytest.mark.parametrize("method", INT8, ids=INT8)
def test_int8_methods_within_tolerance_on_the_saturating_case(method):
    net, x, data = saturating_case()
    artifact = quantize(net, method, data)  # the defaults a user gets
    reference = net(x).detach()
    error = (METHODS[method].load(artifact.data, net, 1).logits(x) - reference).abs().max()
    assert error / reference.abs().max() <= METHODS[method].max_relative_error  # on this machine's kernels
    if method in ONNX_INT8:  # and on AVX2 without VNNI, whichever CPU runs the test
        assert set(avx2_saturation(artifact.data, {"x": x.numpy()}).values()) == {0.0}
