"""Callbacks: Lightning hooks around training; the quantization engine itself is ``quantization``.

Each class is imported from its module when first used, so ``callbacks.best_checkpoint`` (read by the CLI) does not
load the engine.
"""

import importlib

_MODULES = {
    "PostTrainingQuantization": "callbacks.post_training_quantization",
    "PredictionWriter": "callbacks.prediction_writer",
}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
