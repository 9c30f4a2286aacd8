"""Data in: LightningDataModules that serve whole batches from in-memory tensors."""

from datamodules.mnist import MNISTDataModule

__all__ = ["MNISTDataModule"]
