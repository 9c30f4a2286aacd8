"""Multi-layer perceptron for wide, sparse inputs such as TF-IDF vectors.

The body is a plain ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``(/``nn.Dropout``) in ``self.net``,
so quantizers that walk ``nn.Linear`` modules see every layer; a sparse batch goes through the
first layer with ``torch.sparse.mm`` and is never densified.
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn

from errors import CheckpointError
from modules.base import ClassifierModule


def mlp_body(input_dim: int, hidden_sizes: list[int], num_classes: int, dropout: float) -> nn.Sequential:
    """``Linear -> ReLU (-> Dropout)`` per hidden size, then a ``Linear`` to the class logits.

    Example:
        >>> mlp_body(8, [4], 2, dropout=0.0)
        Sequential(
          (0): Linear(in_features=8, out_features=4, bias=True)
          (1): ReLU()
          (2): Linear(in_features=4, out_features=2, bias=True)
        )
    """
    layers: list[nn.Module] = []
    width = input_dim
    for hidden in hidden_sizes:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)


class MLP(ClassifierModule):
    """MLP classifier, ``(B, input_dim) -> (B, num_classes)`` logits, for dense or sparse batches.

    Args:
        input_dim: Features per example (the vectorizer's width; linked from the datamodule by the CLI).
        hidden_sizes: Width of each hidden layer, first to last.
        num_classes: Number of classes (linked from the datamodule by the CLI).
        dropout: Dropout probability after each hidden ReLU (0 adds no Dropout module).
        optimizer: Optimizer factory (YAML ``class_path`` + ``init_args``).
        lr_scheduler: Optional LR scheduler factory, stepped once per epoch.

    Example:
        >>> model = MLP(input_dim=50, hidden_sizes=[16, 8], num_classes=3)
        >>> model(torch.zeros(2, 50)).shape
        torch.Size([2, 3])
        >>> model(torch.zeros(2, 50).to_sparse()).shape
        torch.Size([2, 3])
    """

    def __init__(
        self,
        input_dim: int = 5000,
        hidden_sizes: list[int] = [512, 256, 128, 64],  # noqa: B006  (never mutated; shown as the CLI default)
        num_classes: int = 2,
        dropout: float = 0.0,
        optimizer: OptimizerCallable = torch.optim.Adam,
        lr_scheduler: LRSchedulerCallable | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        if input_dim < 1:
            raise ValueError(f"Expected `input_dim` >= 1, got {input_dim}.")
        if not hidden_sizes or any(size < 1 for size in hidden_sizes):
            raise ValueError(f"Expected `hidden_sizes` to be a non-empty list of widths >= 1, got {hidden_sizes}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"Expected `dropout` in [0, 1), got {dropout}.")
        self.save_hyperparameters()
        self.net = mlp_body(input_dim, list(hidden_sizes), num_classes, dropout)
        first = self.net[0]
        # Same (out, in) shape, but stored input-major (weight.t() is contiguous): a sparse batch
        # then reads and its gradient writes whole contiguous rows of weight.t(), ~3x faster than
        # strided columns. Still a plain nn.Linear with a plain state_dict.
        first.weight = nn.Parameter(first.weight.detach().t().contiguous().t())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.strided:
            return self.net(x)  # (B, input_dim) -> (B, num_classes)
        first = self.net[0]
        hidden = torch.sparse.mm(x, first.weight.t()) + first.bias  # sparse (B, input_dim) -> dense (B, hidden)
        return self.net[1:](hidden)  # (B, hidden) -> (B, num_classes)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning loads the weights before the datamodule's state: a vectorizer-width mismatch
        # would surface as a size-mismatch traceback, so name it and its fix here.
        super().on_load_checkpoint(checkpoint)
        found = checkpoint.get("state_dict", {}).get("net.0.weight")
        expected = self.net[0].weight.shape
        if found is not None and found.shape[1] != expected[1]:
            raise CheckpointError(
                f"The checkpoint's MLP takes {found.shape[1]} input features, this one {expected[1]} (the "
                "datamodule's vectorizer width): the data settings differ from training. Use the training "
                "data settings, or pass --data.init_args.vectorizer_checkpoint <checkpoint> to reuse its vectorizer."
            )
