"""Data in: LightningDataModules that serve whole batches from in-memory tensors.

Each class is imported from its module when first used: MNIST reads with torchvision, text with scikit-learn, and
neither loads for a run (or a ``--help``) that does not use it.
"""

import importlib

_MODULES = {"MNISTDataModule": "datamodules.mnist", "TextDataModule": "datamodules.text"}
__all__ = list(_MODULES)


def __getattr__(name: str):
    if name in _MODULES:
        return getattr(importlib.import_module(_MODULES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
