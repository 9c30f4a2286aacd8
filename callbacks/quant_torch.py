"""PyTorch quantization methods: each one stores every ``nn.Linear`` of a plain net its own way.

A net is written as a flat list of layers (plain data) plus a state dict of tensors, so an
artifact loads back with ``torch.load(weights_only=True)`` and never unpickles code.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

FORMAT = "quantlight-linear-v1"
# Layers without weights, by the name stored in an artifact. Dropout is the identity at inference.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "flatten": nn.Flatten,
    "identity": nn.Identity,
}
_ACTIVATION_NAMES = {cls: name for name, cls in ACTIVATIONS.items()} | {nn.Dropout: "identity"}


@dataclass(frozen=True)
class QuantOptions:
    """Settings shared by the methods (each method reads the ones it needs).

    Args:
        fixed_scale_bits: ``fixed_scale_int8`` stores ``round(w * 2**bits)`` clamped to int8.
        calibration: Input batches, ``(B, input_dim)`` fp32, that static methods calibrate on.
        onnx_weights: Weight type of the ONNX int8 methods: ``int7`` (int8 in [-64, 64], exact on
            every x86 CPU), ``uint8`` (u8 x u8 kernels, exact everywhere) or ``int8`` (full range:
            int16 sums can saturate on AVX2 CPUs without VNNI).
        onnx_per_channel: One weight scale per output channel instead of one per layer.
        onnx_opset: ONNX opset of the exported graph.
    """

    fixed_scale_bits: int = 7
    calibration: list[torch.Tensor] = field(default_factory=list)
    onnx_weights: str = "int7"
    onnx_per_channel: bool = True
    onnx_opset: int = 17


Stats = dict[str, int]


@dataclass(frozen=True)
class LinearCodec:
    """How one method stores an ``nn.Linear`` and rebuilds a module that runs it.

    ``encode(linear, options)`` returns the tensors to save, extra plain-data settings for the
    layer spec, and counters (e.g. saturated values); ``decode(tensors, spec)`` rebuilds the layer.
    """

    encode: Callable[[nn.Linear, QuantOptions], tuple[dict[str, torch.Tensor], dict[str, Any], Stats]]
    decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], nn.Module]
    input_dtype: torch.dtype = torch.float32


class Int8WeightLinear(nn.Module):
    """Linear layer with int8 weights kept in memory and dequantized at every call.

    Args:
        weight: ``(out, in)`` int8 weights.
        scale: ``(out, 1)`` fp32 scales, one per output channel (or the same for all).
        bias: ``(out,)`` fp32 bias, or ``None``.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype) * self.scale, self.bias)  # (B, in) -> (B, out)


def plain_layers(net: nn.Module) -> list[nn.Module]:
    """The layers of ``net`` in call order: an ``nn.Linear`` or activation, or ``nn.Sequential`` of them.

    Raises:
        ValueError: ``net`` holds a layer the artifact format cannot describe.
    """
    layers = list(_flatten(net, "net"))
    if not any(isinstance(layer, nn.Linear) for layer in layers):
        raise ValueError(f"Expected `net` to contain at least one nn.Linear, got {type(net).__name__}.")
    return layers


def _flatten(module: nn.Module, name: str) -> Iterator[nn.Module]:
    if isinstance(module, nn.Sequential):
        for child_name, child in module.named_children():
            yield from _flatten(child, f"{name}.{child_name}")
    elif isinstance(module, nn.Linear) or type(module) in _ACTIVATION_NAMES:
        yield module
    else:
        known = ", ".join(["Linear", "Sequential", *(cls.__name__ for cls in _ACTIVATION_NAMES)])
        raise ValueError(
            f"Quantization supports nets made of ({known}); found {type(module).__name__} at `{name}`. "
            "Build the model's `net` from those layers."
        )


def _fp_codec(dtype: torch.dtype) -> LinearCodec:
    def encode(linear: nn.Linear, options: QuantOptions):
        tensors = {"weight": linear.weight.detach().to(dtype).clone()}
        if linear.bias is not None:
            tensors["bias"] = linear.bias.detach().to(dtype).clone()
        return tensors, {}, {}

    def decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
        layer = nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], dtype=dtype)
        layer.load_state_dict(tensors)
        return layer

    return LinearCodec(encode, decode, input_dtype=dtype)


def _weight_only_encode(linear: nn.Linear, options: QuantOptions):
    weight = linear.weight.detach()
    # Symmetric per output channel: the largest |w| of each row maps to 127, so nothing saturates.
    scale = weight.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / 127  # (out, 1)
    tensors = {"weight": torch.round(weight / scale).clamp(-127, 127).to(torch.int8), "scale": scale.float()}
    if linear.bias is not None:
        tensors["bias"] = linear.bias.detach().float().clone()
    return tensors, {}, {}


def _weight_only_decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    return Int8WeightLinear(tensors["weight"], tensors["scale"], tensors.get("bias"))


def _to_fixed_scale(values: torch.Tensor, bits: int) -> tuple[torch.Tensor, int]:
    scaled = torch.round(values.detach() * 2**bits)
    saturated = int(((scaled > 127) | (scaled < -128)).sum())
    return scaled.clamp(-128, 127).to(torch.int8), saturated


def _fixed_scale_encode(linear: nn.Linear, options: QuantOptions):
    bits = options.fixed_scale_bits
    tensors, saturated = {}, 0
    for name, param in (("weight", linear.weight), ("bias", linear.bias)):
        if param is not None:
            tensors[name], count = _to_fixed_scale(param, bits)
            saturated += count
    total = sum(t.numel() for t in tensors.values())
    return tensors, {"bits": bits}, {"saturated": saturated, "quantized": total}


def _fixed_scale_decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    step = 2.0 ** -spec["bits"]
    bias = tensors["bias"].float() * step if "bias" in tensors else None
    return Int8WeightLinear(tensors["weight"], torch.tensor(step), bias)


def _dynamic_int8_encode(linear: nn.Linear, options: QuantOptions):
    with quantization_warnings_silenced():
        quantize_dynamic = _ao_quantize_dynamic()
        # quantize_dynamic swaps children only, so the layer goes in a one-item Sequential.
        quantized = quantize_dynamic(nn.Sequential(_fp32_copy(linear)), {nn.Linear}, dtype=torch.qint8)[0]
        weight, bias = quantized._weight_bias()
        tensors = {"weight": weight.int_repr().clone()}
        spec = {"scale": float(weight.q_scale()), "zero_point": int(weight.q_zero_point())}
    if bias is not None:
        tensors["bias"] = bias.detach().float().clone()
    return tensors, spec, {}


def _dynamic_int8_decode(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    with quantization_warnings_silenced():
        from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

        layer = DynamicQuantizedLinear(spec["in_features"], spec["out_features"], bias_=spec["bias"], dtype=torch.qint8)
        weight = torch._make_per_tensor_quantized_tensor(tensors["weight"], spec["scale"], spec["zero_point"])
        layer.set_weight_bias(weight, tensors.get("bias"))
    return layer


def _ao_quantize_dynamic():
    """``torch.ao.quantization.quantize_dynamic``, or a message naming the alternatives when it is gone."""
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:
        raise RuntimeError(
            f"Method `dynamic_int8` needs torch.ao.quantization.quantize_dynamic, which torch {torch.__version__} "
            "no longer has. Use `onnx_dynamic_int8` or `weight_only_int8` instead."
        ) from err
    return quantize_dynamic


@contextmanager
def quantization_warnings_silenced() -> Iterator[None]:
    """Silence what torch.ao.quantization (deprecated since 2.10) and quantized tensors warn at every use."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions", category=UserWarning)
        yield


def _fp32_copy(linear: nn.Linear) -> nn.Linear:
    copy = nn.Linear(linear.in_features, linear.out_features, bias=linear.bias is not None)
    copy.load_state_dict({k: v.detach().float() for k, v in linear.state_dict().items()})
    return copy


CODECS: dict[str, LinearCodec] = {
    "fp32": _fp_codec(torch.float32),
    "fp16": _fp_codec(torch.float16),
    "bf16": _fp_codec(torch.bfloat16),
    "dynamic_int8": LinearCodec(_dynamic_int8_encode, _dynamic_int8_decode),
    "fixed_scale_int8": LinearCodec(_fixed_scale_encode, _fixed_scale_decode),
    "weight_only_int8": LinearCodec(_weight_only_encode, _weight_only_decode),
}


def encode_net(net: nn.Module, options: QuantOptions, method: str) -> tuple[bytes, dict[str, float]]:
    """Quantize every ``nn.Linear`` of ``net`` with ``method``; return the artifact bytes and its stats.

    ``net`` is only read. The file is a weights-only payload ``{format, method, layers, state}``
    written with torch's compact (non-zip) serializer, so a 32 KB model is not dominated by
    container overhead.
    """
    codec = CODECS[method]
    layers: list[dict[str, Any]] = []
    state: dict[str, torch.Tensor] = {}
    totals: Stats = {}
    for index, layer in enumerate(plain_layers(net)):
        if not isinstance(layer, nn.Linear):
            layers.append({"kind": _ACTIVATION_NAMES[type(layer)]})
            continue
        tensors, extra, stats = codec.encode(layer, options)
        layers.append(
            {"kind": "linear", "in_features": layer.in_features, "out_features": layer.out_features}
            | {"bias": layer.bias is not None, **extra}
        )
        state |= {f"{index}.{name}": tensor.cpu().contiguous() for name, tensor in tensors.items()}
        for key, count in stats.items():
            totals[key] = totals.get(key, 0) + count
    buffer = io.BytesIO()
    payload = {"format": FORMAT, "method": method, "layers": layers, "state": state}
    torch.save(payload, buffer, _use_new_zipfile_serialization=False)
    info = {"saturated_fraction": totals["saturated"] / totals["quantized"]} if "quantized" in totals else {}
    return buffer.getvalue(), info


def decode_net(data: bytes) -> tuple[nn.Sequential, torch.dtype]:
    """Rebuild the module saved by :func:`encode_net` (in eval mode) and the dtype its input needs."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT or payload.get("method") not in CODECS:
        raise ValueError(f"Not a Quantlight artifact: expected format {FORMAT!r} with a known method.")
    codec = CODECS[payload["method"]]
    modules = []
    for index, spec in enumerate(payload["layers"]):
        if spec["kind"] != "linear":
            modules.append(ACTIVATIONS[spec["kind"]]())
            continue
        prefix = f"{index}."
        tensors = {key.removeprefix(prefix): t for key, t in payload["state"].items() if key.startswith(prefix)}
        modules.append(codec.decode(tensors, spec))
    return nn.Sequential(*modules).eval(), codec.input_dtype


class TorchRunner:
    """Runs a rebuilt module: ``prepare`` casts the input once, ``run`` is the call that is timed."""

    def __init__(self, module: nn.Module, input_dtype: torch.dtype) -> None:
        self.module = module
        self.input_dtype = input_dtype

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.input_dtype).contiguous()

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        return self.module(prepared)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits, ``(B, input_dim) -> (B, num_classes)``."""
        with torch.inference_mode():
            return self.run(self.prepare(x)).float()
