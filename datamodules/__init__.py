"""Data in: LightningDataModules that serve whole batches from in-memory tensors."""

from datamodules.mnist import MNISTDataModule
from datamodules.text import TextDataModule

__all__ = ["MNISTDataModule", "TextDataModule"]
