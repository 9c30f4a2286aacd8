"""Export a model to ONNX and run ``.onnx`` artifacts in ONNX Runtime: what the ONNX methods share.

The export traces the model's own ``forward`` on an example batch (dense), so any architecture
the exporter supports goes through; the artifact is the ``.onnx`` file itself and runs with a
fixed intra-op thread count, like torch. :func:`linear_nodes` finds the graph nodes of each
``nn.Linear``, so a method can leave the layers of ``QuantizationData.keep_fp32`` unquantized. With
``QuantizationData.sparse_input`` the method's graph is rewritten to read term ids and weights
(``quantization.artifacts.embedding_bag``) when its first layer is a Linear over the input.
"""

from __future__ import annotations

import copy
import io
import logging
import warnings
import weakref
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from quantization.artifacts.embedding_bag import first_linear, to_sparse_input
from quantization.candidates.swap import check_keep_fp32, linear_layers
from quantization.registry import Artifact, Method, QuantizationData
from runtime import Bag, OnnxModel

INPUT_NAME, OUTPUT_NAME = "x", "logits"
OPSET = 17
# The ops the exporter writes for ``nn.Linear``: ``Gemm`` on a (B, in) input, ``MatMul`` (+ ``Add``) on more dims.
LINEAR_OPS = ("Gemm", "MatMul")


# The latest exports, newest last: the report exports one model per ONNX method and once more as fp32 ships it. An
# entry goes with its model (a weak reference), so a model's export lives no longer than the model.
_EXPORTS: list[tuple[weakref.ref, tuple, bytes]] = []
_EXPORTS_KEPT = 4


def _export_key(model: nn.Module, example: torch.Tensor) -> tuple:
    """What an export depends on: the example's shape and type, and each tensor of the model, by storage and version
    (an in-place change bumps the version, a replaced tensor has another storage)."""
    tensors = model.state_dict(keep_vars=True)
    state = tuple((k, t.data_ptr(), t._version, tuple(t.shape), t.dtype) for k, t in tensors.items())
    return type(model), tuple(example.shape[1:]), example.dtype, example.layout, state


def _forget(ref: weakref.ref) -> None:
    _EXPORTS[:] = [entry for entry in _EXPORTS if entry[0] is not ref]


def export_onnx(model: nn.Module, example: torch.Tensor) -> bytes:
    """``model`` as an fp32 ONNX graph with a dynamic batch dimension, ``(B, ...) -> (B, num_classes)``; the same
    model (unchanged) and input shape give the bytes of the last export again."""
    key = _export_key(model, example)
    for i, (ref, cached_key, data) in enumerate(_EXPORTS):
        if ref() is model and cached_key == key:
            _EXPORTS.append(_EXPORTS.pop(i))
            return data
    data = _export(model, example)
    _EXPORTS.append((weakref.ref(model, _forget), key, data))
    del _EXPORTS[:-_EXPORTS_KEPT]
    return data


def _export(model: nn.Module, example: torch.Tensor) -> bytes:
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of dynamo=True, which needs onnxscript
        # (not a dependency); it still exports these graphs exactly.
        warnings.filterwarnings(
            "ignore", message=r".*legacy TorchScript-based ONNX export", category=DeprecationWarning
        )
        warnings.filterwarnings("ignore", message=r"The feature will be removed", category=DeprecationWarning)
        torch.onnx.export(
            copy.deepcopy(model).float().eval(),  # the caller's model is only read
            (dense(example[:1]).float(),),
            buffer,
            dynamo=False,
            opset_version=OPSET,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


def _export_scope(layer: str) -> str:
    """The TorchScript exporter's node-name prefix for the module ``layer``: ``a.b`` -> ``/a/a.b/``."""
    parts = layer.split(".") if layer else []
    return "/" + "".join(f"{'.'.join(parts[: i + 1])}/" for i in range(len(parts)))


def linear_nodes(graph: onnx.GraphProto, layers: Collection[str]) -> dict[str, list[str]]:
    """The names of the ``Gemm``/``MatMul`` nodes that compute each ``nn.Linear`` of ``layers``, in an exported graph.

    A node belongs to ``layer`` when it reads the initializer ``{layer}.weight`` (the exporter names
    parameters by their ``state_dict`` keys) or sits directly in the layer's export scope (``/a/a.b/Gemm``:
    the weight is renamed where it is folded, e.g. transposed for a ``MatMul``). Raises ``RuntimeError``
    naming a layer with no node, rather than quantize a layer the caller asked to keep.

    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Sequential(nn.Linear(4, 2)))
    >>> graph = onnx.load_from_string(export_onnx(net, torch.zeros(1, 8))).graph
    >>> linear_nodes(graph, ["0", "2.0"])
    {'0': ['/0/Gemm'], '2.0': ['/2/2.0/Gemm']}
    """
    found: dict[str, list[str]] = {}
    for layer in layers:
        weight, scope = f"{layer}.weight" if layer else "weight", _export_scope(layer)
        found[layer] = [
            node.name
            for node in graph.node
            if node.op_type in LINEAR_OPS
            and (node.input[1] == weight or (node.name.startswith(scope) and "/" not in node.name[len(scope) :]))
        ]
        if not found[layer]:
            raise RuntimeError(
                f"Found no ONNX node of nn.Linear {layer!r} in the exported graph (a Gemm/MatMul reading "
                f"{weight!r} or named {scope}...): it cannot be kept in fp32 by an ONNX method; use a torch method."
            )
    return found


def dense(x: torch.Tensor) -> torch.Tensor:
    """``x`` as a dense tensor: sparse batches (TF-IDF) are densified, as a deployed model receives them."""
    return x if x.layout == torch.strided else x.to_dense()


def as_numpy(x: torch.Tensor) -> np.ndarray:
    """A contiguous fp32 NumPy copy of a (possibly sparse) batch."""
    return np.ascontiguousarray(dense(x).detach().cpu().float().numpy())


class _DropAdvice(logging.Filter):
    """ONNX Runtime's quantizer logs "consider pre-processing" through the root logger at every call.

    Shape pre-processing adds value_info records that make small models' files bigger, so it is
    skipped on purpose; only that advice is dropped, nothing else that is logged.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()


@contextmanager
def quantizer_advice_dropped() -> Iterator[None]:
    """Drop the quantizer's pre-processing advice (logged on the root logger) for the duration."""
    advice = _DropAdvice()
    logging.root.addFilter(advice)
    try:
        yield
    finally:
        logging.root.removeFilter(advice)


def bag_of(x: torch.Tensor) -> Bag:
    """A batch's term ids and weights: the non-zeros of each row of a sparse COO (or dense) ``(B, D)`` batch."""
    if x.layout == torch.strided:
        return Bag.from_dense(as_numpy(x))
    x = x.to_sparse_coo().coalesce()  # sorted by row, then column
    rows, columns = x.indices().cpu().numpy()
    return Bag.from_coo(rows, columns, x.values().detach().cpu().float().numpy(), x.shape[0])


class OrtRunner:
    """Runs an ONNX model in ONNX Runtime on CPU with ``num_threads`` intra-op threads, as a bundle does
    (``runtime.OnnxModel``); a sparse-input model is fed each batch's term ids and weights.

    Args:
        model: The ``.onnx`` file's bytes.
        num_threads: Intra-op threads (inter-op is 1: the graph is a chain).
    """

    def __init__(self, model: bytes, num_threads: int = 1) -> None:
        self.model = OnnxModel(model, num_threads)
        self.session = self.model.session
        self.sparse_input = self.model.sparse_input

    def prepare(self, x: torch.Tensor) -> dict[str, np.ndarray]:
        return self.model.feeds(bag_of(x) if self.sparse_input else as_numpy(x))

    def run(self, prepared: dict[str, np.ndarray]) -> np.ndarray:
        return self.model.run(prepared)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits, ``(B, input_dim) -> (B, num_classes)``."""
        return torch.from_numpy(self.run(self.prepare(x))).float()

    def logits_each(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 logits of each example of ``x`` run alone, one call each (a served request): what ``logits`` gives
        the examples one at a time, with the batch converted once rather than per example."""
        if not self.sparse_input:
            rows = as_numpy(x)
            return torch.from_numpy(
                np.concatenate([self.run(self.model.feeds(rows[b : b + 1])) for b in range(len(rows))])
            ).float()
        bag = bag_of(x)
        out = []
        for b, n in enumerate(bag.lengths.tolist()):  # the bag one example's batch would give: width max(1, n)
            width = max(1, n)
            one = Bag(bag.ids[b : b + 1, :width].copy(), bag.weights[b : b + 1, :width].copy(), None)
            out.append(self.run(self.model.feeds(one)))
        return torch.from_numpy(np.concatenate(out)).float()


def sparse_artifact(
    onnx_model: bytes, fp32: bytes, model: nn.Module, settings: Any, info: dict[str, Any]
) -> tuple[bytes, dict[str, Any]]:
    """``onnx_model`` rewritten to read term ids and weights (``quantization.artifacts.embedding_bag``), with
    ``info["bag_rows"]`` the kind of rows it gathers; unchanged, with ``info["dense_input"]`` saying why,
    when the model's first layer is not a Linear over its input or its graph is not a form the rewrite knows."""
    layer = first_linear(model)
    if layer is None:
        return onnx_model, info | {"dense_input": "the first layer is not an nn.Linear over the input"}
    graph = onnx.load_from_string(fp32).graph
    node = linear_nodes(graph, [layer])[layer][0]
    output = next(n.output[0] for n in graph.node if n.name == node)  # the layer's output, /0/Gemm_output_0
    linear = linear_layers(model)[layer]
    block_size, symmetric = getattr(settings, "block_size", 128), getattr(settings, "symmetric", True)
    try:
        rewritten, rows = to_sparse_input(onnx_model, output, linear, block_size, symmetric)
    except ValueError as err:
        return onnx_model, info | {"dense_input": str(err)}
    return rewritten, info | {"bag_rows": rows}


def onnx_method(
    name: str, settings: type, convert, summary: str, max_relative_error: float, needs_calibration: bool = False
) -> Method:
    """A :class:`Method` whose artifact is an ``.onnx`` file.

    ``convert(fp32_onnx_bytes, settings, data, keep_nodes)`` returns the quantized file's bytes and its
    info; ``keep_nodes`` names the graph nodes of the ``data.keep_fp32`` layers, which it leaves fp32.
    """

    def quantize(model: nn.Module, method_settings, data: QuantizationData) -> Artifact:
        if needs_calibration and not data.calibration:
            raise ValueError(f"Method `{name}` needs calibration batches; got none (`calibration_batches` 0?).")
        check_keep_fp32(model, data.keep_fp32)
        fp32 = export_onnx(model, data.example)
        kept = linear_nodes(onnx.load_from_string(fp32).graph, sorted(data.keep_fp32)) if data.keep_fp32 else {}
        onnx_model, info = convert(fp32, method_settings, data, [node for nodes in kept.values() for node in nodes])
        if data.keep_fp32:
            info["kept_fp32_layers"] = len(data.keep_fp32)
        if data.sparse_input:
            onnx_model, info = sparse_artifact(onnx_model, fp32, model, method_settings, info)
        return Artifact(name, onnx_model, ".onnx", info)

    def load(data: bytes, model: nn.Module | None, num_threads: int) -> OrtRunner:
        return OrtRunner(data, num_threads)

    return Method(
        name,
        settings,
        quantize,
        load,
        ".onnx",
        needs_calibration=needs_calibration,
        summary=summary,
        max_relative_error=max_relative_error,
    )
