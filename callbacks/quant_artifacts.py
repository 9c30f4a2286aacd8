"""Quantized artifacts on disk: atomic writes, and loading one back for inference.

A ``.pt`` artifact is a weights-only payload (``torch.load(weights_only=True)``, no code is
unpickled); a ``.onnx`` artifact runs in ONNX Runtime. Both load into a runner with
``logits(x)``, the same object the report measured.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import torch

from callbacks.atomic import atomic_write
from callbacks.quant_methods import Artifact
from callbacks.quant_onnx import OrtRunner
from callbacks.quant_torch import TorchRunner, decode_net


class Runner(Protocol):
    """A loaded model: ``prepare`` converts an input once, ``run`` is the timed call."""

    def prepare(self, x: torch.Tensor) -> Any: ...

    def run(self, prepared: Any) -> Any: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...


def save_artifact(artifact: Artifact, folder: str | os.PathLike) -> Path:
    """Write ``artifact`` as ``<folder>/<method><suffix>``; return its path."""
    return atomic_write(Path(folder) / f"{artifact.method}{artifact.suffix}", artifact.data)


def runner_from_bytes(data: bytes, suffix: str, num_threads: int = 1) -> Runner:
    """A runner for an artifact's bytes (``suffix`` ``.pt`` or ``.onnx``)."""
    if suffix == ".onnx":
        return OrtRunner(data, num_threads)
    if suffix == ".pt":
        module, input_dtype = decode_net(data)
        return TorchRunner(module, input_dtype)
    raise ValueError(f"Expected an artifact suffix in (.pt, .onnx), got {suffix!r}.")


def load_artifact(path: str | os.PathLike, num_threads: int = 1) -> Runner:
    """Load a saved artifact for inference; ``runner.logits(x)`` gives ``(B, num_classes)`` fp32 logits.

    Args:
        path: A ``.pt`` or ``.onnx`` file written by the quantization report.
        num_threads: ONNX Runtime intra-op threads (torch uses ``torch.set_num_threads``).
    """
    path = Path(path)
    return runner_from_bytes(path.read_bytes(), path.suffix, num_threads)
