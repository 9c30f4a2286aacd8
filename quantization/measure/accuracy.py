"""A row's predictions over a split, in one pass or one example a call (what a served request is), and their
accuracy."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torchmetrics.functional.classification import multiclass_accuracy

from quantization.measure.latency import Batch
from quantization.registry import Runner


def evaluate(runner: Runner, batches: Sequence[Batch]) -> tuple[torch.Tensor, float]:
    """``(N, num_classes)`` fp32 logits over all ``batches`` (fed as given) and their accuracy (torchmetrics, micro)."""
    if not batches:
        raise ValueError("Expected at least one (x, y) batch to evaluate on, got none.")
    logits = torch.cat([runner.logits(x) for x, _ in batches])  # (N, num_classes)
    labels = torch.cat([y for _, y in batches])
    return logits, float(multiclass_accuracy(logits, labels, num_classes=logits.shape[1], average="micro"))


def one_per_call(batches: Sequence[Batch]) -> list[Batch]:
    """Each example of ``batches`` as a batch of its own, in order: what a served request is.

    >>> [x.tolist() for x, _ in one_per_call([(torch.eye(2), torch.tensor([0, 1]))])]
    [[[1.0, 0.0]], [[0.0, 1.0]]]
    """
    return [(x.index_select(0, torch.tensor([i])), y[i : i + 1]) for x, y in batches for i in range(len(y))]


class OnePerCall:
    """``runner`` called one example at a time, what a served request is, for a method whose labels depend on the
    call's other examples (activations quantized per call): the logits :func:`one_per_call` batches give, through
    the runner's ``logits_each`` where it has one (a batch converted once, not per example)."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.sparse_input = runner.sparse_input

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.runner, "logits_each"):
            return self.runner.logits_each(x)
        return torch.cat([self.runner.logits(one) for one, _ in one_per_call([(x, torch.zeros(len(x)))])])


def predict(runner: Runner, batches: Sequence[Batch]) -> tuple[torch.Tensor, float]:
    """Predicted classes over all ``batches`` and their accuracy (:func:`evaluate`)."""
    logits, accuracy = evaluate(runner, batches)
    return logits.argmax(dim=1), accuracy
