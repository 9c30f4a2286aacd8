"""The ``.pt`` artifact of the torch methods: each ``nn.Linear`` stored its method's way, the rest as fp32.

The file is a weights-only payload (``torch.load(weights_only=True)``, no code is unpickled):
``{format, method, settings, layers: {name: spec}, state: {name.tensor: tensor}, rest, architecture}``.
A layer named in ``QuantizationData.keep_fp32`` is stored as a plain fp32 Linear (``kept_fp32`` in its
spec) and loads back as one. Loading swaps the decoded layers into a copy of the model the artifact
came from; a plain ``nn.Sequential`` of Linear layers and activations is also described in
``architecture``, so it loads with no model at hand.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from quantization.artifacts.torch_bag import EmbeddingBagLinear
from quantization.candidates.swap import check_keep_fp32, linear_layers, swap_linears
from quantization.registry import Artifact, Method, QuantizationData

FORMAT = "quantlight-linear-v2"
# Weightless layers a flat artifact can rebuild by name. Dropout is the identity at inference.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "flatten": nn.Flatten,
    "identity": nn.Identity,
}
_KINDS = {cls: name for name, cls in ACTIVATIONS.items()} | {nn.Dropout: "identity"}
Encoded = tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, int]]


@dataclass(frozen=True)
class LinearCodec:
    """How a method stores one ``nn.Linear`` and rebuilds a module that runs it.

    ``encode(linear, settings)`` returns the tensors to save, plain-data settings for the layer's
    spec, and counters (e.g. saturated values); ``decode(tensors, spec)`` rebuilds the layer.
    ``input_dtype``: the dtype a plain stack of such layers runs in end to end (the input is cast
    once, before the timed call, instead of in every layer). ``fp32_weight``: the rebuilt layer holds an
    fp32 ``weight`` (and ``bias``) and computes ``F.linear`` with them, so as the first layer over term
    weights it can run as an embedding bag over the rows of the terms present (``torch_bag``).
    """

    encode: Callable[[nn.Linear, Any], Encoded]
    decode: Callable[[dict[str, torch.Tensor], dict[str, Any]], nn.Module]
    input_dtype: torch.dtype = torch.float32
    fp32_weight: bool = False


def _encode_fp32(linear: nn.Linear, settings: Any) -> Encoded:
    tensors = {"weight": linear.weight.detach().float().clone()}
    if linear.bias is not None:
        tensors["bias"] = linear.bias.detach().float().clone()
    return tensors, {}, {}


def _decode_fp32(tensors: dict[str, torch.Tensor], spec: dict[str, Any]) -> nn.Module:
    layer = nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"])
    layer.load_state_dict(tensors)
    return layer


# The trained weights as they are: the fp32 method's codec, and every method's for a kept layer.
FP32_CODEC = LinearCodec(_encode_fp32, _decode_fp32, fp32_weight=True)


def encode_model(
    model: nn.Module, method: str, codec: LinearCodec, settings: Any, keep_fp32: frozenset[str] = frozenset()
) -> Artifact:
    """Encode every ``nn.Linear`` of a read-only ``model`` with ``codec`` but those in ``keep_fp32``; other
    tensors stay fp32.

    Written with torch's compact (non-zip) serializer, so a 32 KB model is not dominated by
    container overhead. ``info["saturated_fraction"]`` sums the codec's ``saturated``/``quantized``
    over the quantized layers; ``info["kept_fp32_layers"]`` counts the kept ones (when there are any).
    """
    check_keep_fp32(model, keep_fp32)
    layers: dict[str, dict[str, Any]] = {}
    state: dict[str, torch.Tensor] = {}
    totals: dict[str, int] = {}
    for name, linear in linear_layers(model).items():
        kept = name in keep_fp32
        tensors, extra, stats = (FP32_CODEC if kept else codec).encode(linear, settings)
        extra = {"kept_fp32": True} if kept else extra
        layers[name] = {"in_features": linear.in_features, "out_features": linear.out_features}
        layers[name] |= {"bias": linear.bias is not None, **extra}
        state |= {f"{name}.{key}": tensor.detach().cpu().contiguous() for key, tensor in tensors.items()}
        for key, count in stats.items():
            totals[key] = totals.get(key, 0) + count
    rest = {k: v.detach().cpu().float() for k, v in model.state_dict().items() if k.rpartition(".")[0] not in layers}
    payload = {"format": FORMAT, "method": method, "settings": dataclasses.asdict(settings), "layers": layers}
    payload |= {"state": state, "rest": rest, "architecture": _architecture(model)}
    buffer = io.BytesIO()
    torch.save(payload, buffer, _use_new_zipfile_serialization=False)
    info = {"saturated_fraction": totals["saturated"] / totals["quantized"]} if "quantized" in totals else {}
    if keep_fp32:
        info["kept_fp32_layers"] = len(keep_fp32)
    return Artifact(method, buffer.getvalue(), ".pt", info)


def read_payload(data: bytes) -> dict[str, Any]:
    """The artifact's plain-data payload, read with ``weights_only=True``."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"Not a Quantlight artifact: expected format {FORMAT!r}.")
    return payload


def decode_model(data: bytes, codec: LinearCodec, model: nn.Module | None = None) -> nn.Module:
    """Rebuild the quantized model (eval mode) from :func:`encode_model`'s bytes.

    Args:
        data: The artifact's bytes.
        codec: The codec of the method that wrote it.
        model: The fp32 model it was made from (only its structure is used); ``None`` for plain
            ``nn.Sequential`` stacks, which the artifact describes itself.
    """
    return _decode_payload(read_payload(data), codec, model)


def _decode_payload(payload: dict[str, Any], codec: LinearCodec, model: nn.Module | None) -> nn.Module:
    if model is None:
        if payload["architecture"] is None:
            raise ValueError(
                "This artifact's model is not a plain nn.Sequential of Linear layers and activations: "
                "pass the fp32 model it was made from (load_artifact(path, model=...))."
            )
        model = _build(payload["architecture"], payload["layers"])
    layers, state = payload["layers"], payload["state"]

    def decode(name: str, _: nn.Linear) -> nn.Module:
        prefix = f"{name}."
        tensors = {key.removeprefix(prefix): t for key, t in state.items() if key.startswith(prefix)}
        return (FP32_CODEC if layers[name].get("kept_fp32") else codec).decode(tensors, layers[name])

    missing = sorted(set(layers) - set(linear_layers(model)))
    if missing:
        raise ValueError(f"The model given has no nn.Linear named {missing[0]!r}: not the model of this artifact.")
    rebuilt = swap_linears(model, decode)
    with torch.no_grad():  # the fp32 tensors of every other layer (norms, embeddings, ...)
        for key, tensor in payload["rest"].items():
            owner, _, name = key.rpartition(".")
            getattr(rebuilt.get_submodule(owner), name).copy_(tensor)
    return rebuilt.eval()


def _architecture(model: nn.Module) -> list[str] | None:
    """``["linear", "relu", ...]`` for a plain ``nn.Sequential`` of Linear layers and activations (or one
    ``nn.Linear``), else ``None``."""
    if type(model) is nn.Linear:
        return ["linear"]
    if not isinstance(model, nn.Sequential):
        return None
    kinds = []
    for layer in model:
        if type(layer) is nn.Linear:
            kinds.append("linear")
        elif type(layer) in _KINDS:
            kinds.append(_KINDS[type(layer)])
        else:
            return None
    return kinds


def _build(architecture: list[str], layers: dict[str, dict[str, Any]]) -> nn.Module:
    if "" in layers:  # a single nn.Linear
        spec = layers[""]
        return nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], device="meta")
    modules: list[nn.Module] = []
    for index, kind in enumerate(architecture):
        if kind == "linear":
            spec = layers[str(index)]
            modules.append(nn.Linear(spec["in_features"], spec["out_features"], bias=spec["bias"], device="meta"))
        else:
            modules.append(ACTIVATIONS[kind]())
    return nn.Sequential(*modules)


class TorchRunner:
    """Runs a rebuilt module: ``prepare`` casts the input and makes it contiguous once, ``run`` is the timed call.

    With ``sparse_input`` (a flat stack whose first layer holds fp32 weights) a sparse batch is fed as it is and
    that layer runs as an embedding bag (converted at the first sparse batch); any other module gets sparse
    batches densified, as a user would feed it.
    """

    def __init__(self, module: nn.Module, input_dtype: torch.dtype = torch.float32, sparse_input: bool = False) -> None:
        self.module = module
        self.input_dtype = input_dtype
        self.sparse_input = sparse_input

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout != torch.strided:
            if self.sparse_input:
                self._bag_first_layer()
                return x.coalesce()
            x = x.to_dense()
        return x.to(self.input_dtype).contiguous()

    def run(self, prepared: torch.Tensor) -> torch.Tensor:
        return self.module(prepared)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits, ``(B, input_dim) -> (B, num_classes)``."""
        with torch.inference_mode():
            return self.run(self.prepare(x)).float()

    def _bag_first_layer(self) -> None:
        stack = isinstance(self.module, nn.Sequential)
        first = self.module[0] if stack else self.module
        if isinstance(first, EmbeddingBagLinear):
            return
        bag = EmbeddingBagLinear.from_weight(first.weight, first.bias)  # replaces the (H, D) weight: same memory
        # A plain Sequential: a subclass's own forward (e.g. one that densifies sparse batches) is not the stack's.
        self.module = nn.Sequential(bag, *list(self.module)[1:]) if stack else bag


def torch_method(
    name: str,
    settings: type,
    codec: LinearCodec,
    summary: str,
    max_relative_error: float,
    refuses: Callable[[str, nn.Module], str | None] | None = None,
    fake_quantize: Callable[[torch.Tensor, Any], torch.Tensor] | None = None,
) -> Method:
    """A :class:`Method` whose artifact is :func:`encode_model`'s ``.pt`` payload."""

    def quantize(model: nn.Module, method_settings: Any, data: QuantizationData) -> Artifact:
        return encode_model(model, name, codec, method_settings, data.keep_fp32)

    def load(data: bytes, model: nn.Module | None, num_threads: int) -> TorchRunner:
        # A plain stack runs in the codec's dtype throughout; other layers (norms, kept fp32 Linear
        # layers, ...) need fp32 in.
        payload = read_payload(data)
        flat = payload["architecture"] is not None
        mixed = any(spec.get("kept_fp32") for spec in payload["layers"].values())
        dtype = codec.input_dtype if flat and not mixed else torch.float32
        first = "" if "" in payload["layers"] else "0"
        spec = payload["layers"].get(first, {})
        rows = flat and payload["architecture"][0] == "linear" and (codec.fp32_weight or spec.get("kept_fp32", False))
        return TorchRunner(_decode_payload(payload, codec, model), dtype, sparse_input=rows and dtype == torch.float32)

    return Method(
        name,
        settings,
        quantize,
        load,
        ".pt",
        refuses=refuses,
        summary=summary,
        max_relative_error=max_relative_error,
        fake_quantize=fake_quantize,
        reads_term_bags=codec.fp32_weight and codec.input_dtype == torch.float32,  # as TorchRunner's first layer
    )
