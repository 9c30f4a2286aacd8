"""Callbacks: Lightning hooks around training; the quantization engine itself is ``quantization``."""

from callbacks.post_training_quantization import PostTrainingQuantization
from callbacks.prediction_writer import PredictionWriter

__all__ = ["PostTrainingQuantization", "PredictionWriter"]
