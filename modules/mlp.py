"""Multi-layer perceptron for wide, sparse inputs such as TF-IDF vectors.

The body is a plain ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``(/``nn.Dropout``) in ``self.net``,
so quantizers that swap ``nn.Linear`` modules see every layer; the body itself sends a sparse batch
through the first layer reading only the weight columns its terms use, so a quantized copy keeps
that forward too.
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn import functional as F

from modules.base import ClassifierModule


class SparseInputSequential(nn.Sequential):
    """``nn.Sequential`` that also takes sparse batches: an ``nn.Linear`` first layer reads only the
    weight columns the batch uses (:func:`sparse_linear`); any other first layer (e.g. a quantized
    one) gets the batch densified."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.strided:
            return super().forward(x)  # (B, input_dim) -> (B, num_classes)
        first, *rest = self
        x = sparse_linear(first, x) if type(first) is nn.Linear else first(x.to_dense())  # (B, hidden)
        for layer in rest:
            x = layer(x)
        return x


def mlp_body(input_dim: int, hidden_sizes: list[int], num_classes: int, dropout: float) -> SparseInputSequential:
    """``Linear -> ReLU (-> Dropout)`` per hidden size, then a ``Linear`` to the class logits.

    Example:
        >>> mlp_body(8, [4], 2, dropout=0.0)
        SparseInputSequential(
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
    return SparseInputSequential(*layers)


def sparse_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` for a sparse batch, reading only the weight columns the batch uses.

    A batch of short texts uses a few hundred of thousands of input columns: multiplying that
    dense ``(B, U)`` block by the ``U`` gathered columns is several times faster than a sparse-dense
    product over the whole weight, and the weight stays a plain contiguous ``nn.Linear`` weight
    (which fused Adam needs to be fast).

    Example:
        >>> layer = nn.Linear(6, 3)
        >>> x = torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
        >>> torch.allclose(sparse_linear(layer, x.to_sparse()), layer(x))
        True
    """
    x = x.to_sparse_coo().coalesce()  # no-ops for the datamodule's coalesced COO batches
    rows, cols = x.indices()  # (nnz,), (nnz,)
    used, position = torch.unique(cols, return_inverse=True)  # (U,) columns in use, (nnz,) their slot
    block = x.values().new_zeros(x.shape[0], len(used)).index_put_((rows, position), x.values())  # (B, U)
    return F.linear(block, layer.weight.index_select(1, used), layer.bias)  # (B, U) x (H, U)^T -> (B, H)


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
        self.example_input_array = torch.zeros(1, input_dim)  # the model summary shows shapes and FLOPs
