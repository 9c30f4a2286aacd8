"""``dynamic_int8``: ``torch.ao.quantization.quantize_dynamic``: int8 weights, activations quantized per call.

fbgemm quantizes activations to 7 bits (``reduce_range``), so its u8 x s8 products cannot
saturate int16 on AVX2. ``torch.ao.quantization`` is deprecated since torch 2.10; if a torch
release drops it, this method says which to use instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from quantization.artifacts.torch_artifact import Encoded, LinearCodec, torch_method
from quantization.registry import register


@dataclass(frozen=True)
class DynamicInt8Settings:
    """No settings: per-tensor symmetric int8 weights (torch's default dynamic qconfig)."""


@contextmanager
def quantization_warnings_silenced() -> Iterator[None]:
    """Silence what torch.ao.quantization (deprecated since 2.10) and quantized tensors warn at every use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions", category=UserWarning)
        yield


def _quantize_dynamic():
    """``torch.ao.quantization.quantize_dynamic``, or a message naming the alternatives when it is gone."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:
        raise RuntimeError(
            f"Method `dynamic_int8` needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
            "no longer has. Use `onnx_dynamic_int8` or `weight_only_int8` instead."
        ) from err
    return quantize_dynamic


def _encode(linear: nn.Linear, settings: DynamicInt8Settings) -> Encoded:
    fp32 = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    fp32.load_state_dict({k: v.detach().float() for k, v in linear.state_dict().items()})
    with quantization_warnings_silenced():
        # quantize_dynamic swaps children only, so the layer goes in a one-item Sequential.
        quantized = _quantize_dynamic()(nn.Sequential(fp32), {nn.Linear}, dtype=torch.qint8)[0]
        weight, bias = quantized._weight_bias()
        tensors = {"weight": weight.int_repr().clone()}
        spec = {"scale": float(weight.q_scale()), "zero_point": int(weight.q_zero_point())}
    if bias is not None:
        tensors["bias"] = bias.detach().float().clone()
    return tensors, spec, {}


def _decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    with quantization_warnings_silenced():
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

        layer = DynamicQuantizedLinear(spec["in_features"], spec["out_features"], bias_=spec["bias"], dtype=torch.qint8)
        weight = torch._make_per_tensor_quantized_tensor(tensors["weight"], spec["scale"], spec["zero_point"])
        layer.set_weight_bias(weight, tensors.get("bias"))
    return layer


METHOD = register(
    replace(
        torch_method(
            "dynamic_int8",
            DynamicInt8Settings,
            LinearCodec(_encode, _decode),
            summary="torch quantize_dynamic: int8 weights, activations quantized per call (fbgemm)",
            max_relative_error=0.05,  # int8 weights (step max/127) and 7-bit activations (range/127): ~1 % per layer
        ),
        activations_per_call=True,
    )
)
