"""Models: plain ``nn.Module`` bodies (``model.net``) trained by a shared LightningModule."""

from modules.base import ClassifierModule
from modules.logistic import LogisticRegression

__all__ = ["ClassifierModule", "LogisticRegression"]
