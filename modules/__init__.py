"""Models: plain ``nn.Module`` bodies (``model.net``) trained by a shared LightningModule."""

from modules.base import ClassifierModule, NonFiniteLossError
from modules.logistic import LogisticRegression

__all__ = ["ClassifierModule", "LogisticRegression", "NonFiniteLossError"]
