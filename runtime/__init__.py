"""Quantlight's runtime: load a deployable bundle and predict from raw inputs, with numpy and ONNX Runtime only.

It never imports torch, Lightning, scikit-learn or Quantlight's engine (``quantization/``, which writes
bundles and may import this package, never the reverse); a test in a fresh process keeps it so.

Use::

    from runtime import load_bundle

    bundle = load_bundle("runs/text_mlp/version_0/quantization/bundle")
    bundle.predict(["what a great day", "worst service ever"])  # ['positive', 'negative']
"""

from .bundle import Bundle, BundleError, featurizer, load_bundle, read_manifest
from .features import Bag, TextFeaturizer
from .images import ImageFeaturizer, read_idx_images, read_images
from .onnx_model import TERM_IDS, TERM_WEIGHTS, OnnxModel

__all__ = [
    "TERM_IDS",
    "TERM_WEIGHTS",
    "Bag",
    "Bundle",
    "BundleError",
    "ImageFeaturizer",
    "OnnxModel",
    "TextFeaturizer",
    "featurizer",
    "load_bundle",
    "read_idx_images",
    "read_images",
    "read_manifest",
]
