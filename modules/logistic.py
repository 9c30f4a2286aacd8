"""Multinomial logistic regression: one ``nn.Linear`` from flattened pixels to class logits."""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from modules.base import ClassifierModule


class LogisticRegression(ClassifierModule):
    """Logistic regression, ``(B, input_dim) -> (B, num_classes)`` logits.

    Args:
        input_dim: Features per example (784 for MNIST; linked from the datamodule by the CLI).
        num_classes: Number of classes (linked from the datamodule by the CLI).
        optimizer: Optimizer factory (YAML ``class_path`` + ``init_args``).
        lr_scheduler: Optional LR scheduler factory, stepped once per epoch.

    Example:
        >>> model = LogisticRegression(input_dim=784, num_classes=10)
        >>> model(torch.zeros(2, 784)).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        input_dim: int = 784,
        num_classes: int = 10,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        if input_dim < 1:
            raise ValueError(f"Expected `input_dim` >= 1, got {input_dim}.")
        self.save_hyperparameters()
        self.net = nn.Linear(input_dim, num_classes)
        self.example_input_array = torch.zeros(1, input_dim)  # the model summary shows shapes and FLOPs
