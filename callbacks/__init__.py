"""Callbacks: what happens around training, quantization first."""

from callbacks.quant_artifacts import load_artifact
from callbacks.quantization import PostTrainingQuantization

__all__ = ["PostTrainingQuantization", "load_artifact"]
