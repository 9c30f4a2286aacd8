"""Artifacts on disk: written atomically, loaded back for inference as the report measured them.

A ``.pt`` artifact is a weights-only payload (no code is unpickled); a ``.onnx`` artifact runs in
ONNX Runtime and needs no Python model at all: the code-free way to deploy.
"""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from quantization.artifacts.onnx_runtime import OrtRunner
from quantization.artifacts.torch_artifact import read_payload
from quantization.registry import METHODS, Artifact, Runner
from storage.atomic import atomic_write


def save_artifact(artifact: Artifact, folder: str | os.PathLike) -> Path:
    """Write ``artifact`` as ``<folder>/<label><suffix>`` (its row name, e.g. ``int3_weight_only+qat.pt``)."""
    return atomic_write(Path(folder) / f"{artifact.label}{artifact.suffix}", artifact.data)


def load_artifact(path: str | os.PathLike, model: nn.Module | None = None, num_threads: int = 1) -> Runner:
    """Load a saved artifact; ``runner.logits(x)`` gives ``(B, num_classes)`` fp32 logits.

    Args:
        path: A ``.pt`` or ``.onnx`` file written by the quantization report.
        model: The fp32 model the artifact was made from, for ``.pt`` artifacts of models that are
            not a plain ``nn.Sequential`` (its weights are not used).
        num_threads: ONNX Runtime intra-op threads (torch uses ``torch.set_num_threads``).
    """
    path = Path(path)
    data = path.read_bytes()
    if path.suffix == ".onnx":
        return OrtRunner(data, num_threads)
    if path.suffix == ".pt":
        method = read_payload(data)["method"]
        if method not in METHODS:
            raise ValueError(f"{path} was written by method {method!r}, which this version does not have.")
        return METHODS[method].load(data, model, num_threads)
    raise ValueError(f"Expected an artifact ending in .pt or .onnx, got {path}.")
