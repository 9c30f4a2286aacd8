"""The quantization engine: methods, artifacts and measurement, usable without Lightning.

>>> import torch
>>> from torch import nn
>>> model = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
>>> artifact = quantize(model, "weight_only_int8", QuantizationData(example=torch.zeros(1, 8)))
>>> artifact.suffix, METHODS[artifact.method].load(artifact.data, model, 1).logits(torch.zeros(3, 8)).shape
('.pt', torch.Size([3, 2]))
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import nn

from quantization import methods  # noqa: F401  (importing it registers every method)
from quantization.artifacts.files import load_artifact, save_artifact
from quantization.candidates.swap import refusals
from quantization.registry import (
    BASELINE,
    METHODS,
    Artifact,
    Method,
    QuantizationData,
    Runner,
    check_methods,
    default_methods,
)

__all__ = [
    "BASELINE",
    "METHODS",
    "Artifact",
    "Method",
    "QuantizationData",
    "Runner",
    "check_methods",
    "check_quantizable",
    "default_methods",
    "load_artifact",
    "quantize",
    "save_artifact",
]


def quantize(
    model: nn.Module, method: str, data: QuantizationData, settings: Mapping[str, Any] | Any | None = None
) -> Artifact:
    """Quantize a read-only ``model`` with the registered ``method``.

    Args:
        model: Any ``nn.Module`` whose weights live in ``nn.Linear`` layers (logits out).
        method: A name in :data:`METHODS`.
        data: An example batch, and calibration batches for methods that need them.
        settings: The method's settings dataclass, or plain values for it; ``None``: its defaults.
    """
    check_methods([method])
    spec = METHODS[method]
    return spec.quantize(model, spec.settings_of(settings), data)


def check_quantizable(model: nn.Module, names: list[str]) -> None:
    """Raise ``ValueError`` naming the first layer and method that cannot be quantized, before any work."""
    for method in check_methods(names):
        reasons = refusals(model, METHODS[method].refuses)
        if reasons:
            raise ValueError(f"Method `{method}` cannot quantize this model: {reasons[0]}.")
