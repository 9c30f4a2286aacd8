"""Models: plain ``nn.Module`` bodies (``model.net``) trained by a shared LightningModule."""

from modules.base import ClassifierModule
from modules.logistic import LogisticRegression
from modules.mlp import MLP

__all__ = ["MLP", "ClassifierModule", "LogisticRegression"]
