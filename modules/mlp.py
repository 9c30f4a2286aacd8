"""Multi-layer perceptron for wide, sparse inputs such as TF-IDF vectors.

The body is a plain ``nn.Sequential`` of ``nn.Linear``/``nn.ReLU``(/``nn.Dropout``) in ``self.net``,
so quantizers that swap ``nn.Linear`` modules see every layer; the body itself sends a sparse batch
through the first layer reading only the weight columns its terms use, so a quantized copy keeps
that forward too. With ``sparse_first_layer`` training also costs what the batch's terms cost: the
first layer's gradient and update cover only the rows of the terms in the batch (``modules.term_rows``).
"""

from __future__ import annotations

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import nn
from torch.nn import functional as F
from torch.nn.parallel import DistributedDataParallel

from modules.base import ClassifierModule
from modules.term_rows import (
    ROWS_GROUP,
    all_reduce_rows,
    check_sparse_optimizer,
    is_term_major,
    row_view,
    term_major,
    term_sum,
    views,
)


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

    A term-major weight (the sparse-trained MLP's, :func:`~modules.term_rows.term_major`) is read as an
    embedding bag, one contiguous row per term (tweets, 5,000 x 512: 0.24 ms a batch of 256 against 5.2 ms
    for the gather below); a row-major one (whose dense gradient fused Adam updates in place: term-major, it
    copies the weight twice a step) multiplies the dense ``(B, U)`` block of the batch's ``U`` columns by
    those columns.

    Example:
        >>> layer = nn.Linear(6, 3)
        >>> x = torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
        >>> torch.allclose(sparse_linear(layer, x.to_sparse()), layer(x))
        True
    """
    if is_term_major(layer):
        out = term_sum(layer.weight.t(), x)  # (B, in) x (in, H) -> (B, H)
        return out if layer.bias is None else out + layer.bias
    x = x.to_sparse_coo().coalesce()  # no-ops for the datamodule's coalesced COO batches
    rows, cols = x.indices()  # (nnz,), (nnz,)
    used, position = torch.unique(cols, return_inverse=True)  # (U,) columns in use, (nnz,) their slot
    block = x.values().new_zeros(x.shape[0], len(used)).index_put_((rows, position), x.values())  # (B, U)
    return F.linear(block, layer.weight.index_select(1, used), layer.bias)  # (B, U) x (H, U)^T -> (B, H)


def dropout(x: torch.Tensor, p: float) -> torch.Tensor:
    """``F.dropout(x, p)`` in training, from uniform draws: the same distribution (each value kept with probability
    ``1 - p`` and scaled by ``1 / (1 - p)``) at a tenth of the cost on CPU (256 x 256: 0.2 against 2.0 ms, whose
    Bernoulli sampler dominated a training step)."""
    keep = (torch.rand_like(x) >= p).to(x.dtype).mul_(1 / (1 - p))  # (B, H): 0 or 1 / (1 - p)
    return x * keep


class MLP(ClassifierModule):
    """MLP classifier, ``(B, input_dim) -> (B, num_classes)`` logits, for dense or sparse batches.

    Args:
        input_dim: Features per example (the vectorizer's width; linked from the datamodule by the CLI).
        hidden_sizes: Width of each hidden layer, first to last.
        num_classes: Number of classes (linked from the datamodule by the CLI).
        dropout: Dropout probability after each hidden ReLU (0 adds no Dropout module).
        optimizer: Optimizer factory (YAML ``class_path`` + ``init_args``).
        lr_scheduler: Optional LR scheduler factory, stepped once per epoch.
        sparse_first_layer: Train the first layer at the cost of the terms a batch uses: its gradient covers the
            rows (terms) the batch uses and the optimizer updates those rows only (``modules.term_rows``). Needs an
            optimizer that takes sparse gradients: SGD with momentum 0 on that layer, or Adagrad.
        first_layer_param_group: Optimizer settings of the first layer's weight alone (its own parameter group),
            e.g. ``{lr: 4.0, momentum: 0.0}``; the other parameters keep the optimizer's own.

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
        sparse_first_layer: bool = False,
        first_layer_param_group: dict[str, float] | None = None,
    ) -> None:
        super().__init__(num_classes, optimizer, lr_scheduler)
        if input_dim < 1:
            raise ValueError(f"Expected `input_dim` >= 1, got {input_dim}.")
        if not hidden_sizes or any(size < 1 for size in hidden_sizes):
            raise ValueError(f"Expected `hidden_sizes` to be a non-empty list of widths >= 1, got {hidden_sizes}.")
        if not 0 <= dropout < 1:
            raise ValueError(f"Expected `dropout` in [0, 1), got {dropout}.")
        if "params" in (first_layer_param_group or {}):
            raise ValueError("Expected `first_layer_param_group` to hold optimizer settings only, got `params`.")
        self.save_hyperparameters()
        self.net = mlp_body(input_dim, list(hidden_sizes), num_classes, dropout)
        self.example_input_array = torch.zeros(1, input_dim)  # the model summary shows shapes and FLOPs
        # The first layer's weight as a table of term rows: the same storage (made term-major), not a parameter of
        # its own (the checkpoint and the model summary see the Linear weight only). DDP leaves that weight to us.
        self.rows = row_view(term_major(self.net[0])) if sparse_first_layer else None
        if sparse_first_layer:
            DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(self, ["net.0.weight"])

    def trains_rows(self) -> bool:
        """Whether training runs the first layer as term rows (``False`` when QAT swapped the layer out)."""
        return self.rows is not None and type(self.net[0]) is nn.Linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and self.trains_rows()):
            return self.net(x)  # (B, input_dim) -> (B, num_classes)
        first, *rest = self.net
        if not views(self.rows, first):
            self.rows.data = first.weight.data.t()  # the weight was moved (a device, a dtype): view it again
        x = term_sum(self.rows, x if x.is_sparse else x.to_sparse(), sparse=True) + first.bias  # (B, in) -> (B, H)
        for layer in rest:
            x = dropout(x, layer.p) if type(layer) is nn.Dropout else layer(x)
        return x

    def on_fit_start(self) -> None:
        if self.trains_rows() and self.trainer.world_size > 1:  # DDP's own start-up broadcast leaves it out
            torch.distributed.broadcast(self.net[0].weight.data, src=0)

    def on_after_backward(self) -> None:
        if self.trains_rows() and self.rows.grad is not None and self.trainer.world_size > 1:
            all_reduce_rows(self.rows)  # DDP synchronized every other gradient during backward

    def parameter_groups(self) -> list:
        first = self.rows if self.trains_rows() else self.net[0].weight  # the rows: the same values, sparse gradients
        if first is self.net[0].weight and self.hparams.first_layer_param_group is None:
            return list(self.parameters())
        rest = [p for p in self.parameters() if p is not self.net[0].weight]
        name = ROWS_GROUP if first is self.rows else "first_layer"  # TensorBoard: lr-SGD/term_rows and lr-SGD/rest
        return [
            {"params": [first], "name": name, **(self.hparams.first_layer_param_group or {})},
            {"params": rest, "name": "rest"},
        ]

    def configure_optimizers(self):
        config = super().configure_optimizers()
        if self.trains_rows():
            optimizer = config["optimizer"] if isinstance(config, dict) else config
            check_sparse_optimizer(optimizer, optimizer.param_groups[0])
        return config
