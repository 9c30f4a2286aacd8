"""Quantlight's runtime: load a deployable bundle and predict from raw inputs, with numpy and ONNX Runtime only.

It never imports torch, Lightning, scikit-learn or Quantlight's engine (``quantization/``, which writes
bundles and may import this package, never the reverse); a test in a fresh process keeps it so.

Use::

    from runtime import load_bundle

    bundle = load_bundle("runs/text_mlp/version_0/quantization/bundle")
    bundle.predict(["what a great day", "worst service ever"])  # ['positive', 'negative']
"""

from .bundle import Bundle, BundleError, featurizer, load_bundle, read_manifest
from .native_bundle import NativeBundle

# Names whose modules import numpy or ONNX Runtime load on first use: a bundle on the native core needs neither.
_LAZY = {"Bag": "features", "TextFeaturizer": "features", "ImageFeaturizer": "images", "read_idx_images": "images"}
_LAZY |= {"read_images": "images", "TERM_IDS": "onnx_model", "TERM_WEIGHTS": "onnx_model", "OnnxModel": "onnx_model"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(__import__(f"{__name__}.{_LAZY[name]}", fromlist=[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "TERM_IDS",
    "TERM_WEIGHTS",
    "Bag",
    "Bundle",
    "BundleError",
    "ImageFeaturizer",
    "NativeBundle",
    "OnnxModel",
    "TextFeaturizer",
    "featurizer",
    "load_bundle",
    "read_idx_images",
    "read_images",
    "read_manifest",
]
