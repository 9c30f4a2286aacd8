"""The registry of quantization methods, keyed by the names used in configs.

A method is a function ``(net, options) -> (artifact bytes, stats)`` that only reads ``net``;
adding one is adding an entry here (torch methods: a codec in ``quant_torch.CODECS``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

from torch import nn

from callbacks.quant_onnx import onnx_dynamic_int8, onnx_static_int8
from callbacks.quant_torch import CODECS, QuantOptions, encode_net

Quantizer = Callable[[nn.Module, QuantOptions], tuple[bytes, dict[str, float]]]

METHODS: dict[str, Quantizer] = {name: partial(encode_net, method=name) for name in CODECS} | {
    "onnx_dynamic_int8": onnx_dynamic_int8,
    "onnx_static_int8": onnx_static_int8,
}
SUFFIXES = {name: ".onnx" if name.startswith("onnx_") else ".pt" for name in METHODS}
NEEDS_CALIBRATION = frozenset({"onnx_static_int8"})
BASELINE = "fp32"


@dataclass(frozen=True)
class Artifact:
    """A quantized model as it is shipped: the file's bytes, its suffix, and method stats.

    Args:
        method: Registry name of the method that made it.
        data: The exact bytes written to disk (their length is the reported size).
        suffix: ``.pt`` (weights-only torch payload) or ``.onnx``.
        info: Method-specific figures, e.g. ``saturated_fraction``.
    """

    method: str
    data: bytes
    suffix: str
    info: dict[str, float] = field(default_factory=dict)

    @property
    def size_bytes(self) -> int:
        return len(self.data)


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate method names; return them without repeats, the fp32 baseline first.

    >>> check_methods(["dynamic_int8", "fp16", "dynamic_int8"])
    ['fp32', 'dynamic_int8', 'fp16']
    """
    unknown = [name for name in methods if name not in METHODS]
    if unknown or isinstance(methods, str):
        got = methods if isinstance(methods, str) else unknown[0]
        raise ValueError(f"Expected `methods` to be a list of ({', '.join(METHODS)}), got {got!r}.")
    return list(dict.fromkeys([BASELINE, *methods]))


def quantize(net: nn.Module, method: str, options: QuantOptions) -> Artifact:
    """Quantize a read-only ``net`` with the registered ``method``."""
    data, info = METHODS[method](net, options)
    return Artifact(method, data, SUFFIXES[method], info)
