"""A text model's first layer trained at the cost of the terms a batch uses, not of the whole vocabulary.

A batch of 256 tweets uses a few thousand of tens of thousands of vocabulary terms. The first ``nn.Linear``
keeps its weight term-major (:func:`term_major`: ``weight.t()``, one row per term, is contiguous), and
:func:`row_view` gives that storage as an ``(in, out)`` table that an embedding bag reads with sparse gradients:
backward yields the gradient of the used rows only, an optimizer that takes sparse gradients (SGD without momentum
on these rows, Adagrad; both the same update their dense versions make, as unused rows have a zero gradient)
touches those rows only, and under DDP the processes exchange those rows only (:func:`all_reduce_rows`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from errors import ConfigError

# Optimizers whose update of a sparse gradient touches only its rows and equals the dense update (SGD: with
# momentum 0 on the rows; a momentum buffer would turn dense, and decay every row every step).
SPARSE_OPTIMIZERS = (torch.optim.SGD, torch.optim.Adagrad)
ROWS_GROUP = "term_rows"  # the name of the rows' optimizer parameter group (its TensorBoard chart: lr-SGD/term_rows)


def term_major(linear: nn.Linear) -> nn.Linear:
    """Store ``linear.weight`` (``(out, in)``, values unchanged) with each input's column contiguous.

    ``weight.t()`` is then a contiguous ``(in, out)`` table, one row per input term, which an embedding bag
    reads row by row; ``weight`` itself keeps its shape, its values and its state-dict key.

    Example:
        >>> layer = term_major(nn.Linear(3, 2))
        >>> layer.weight.shape, layer.weight.t().is_contiguous()
        (torch.Size([2, 3]), True)
    """
    linear.weight = nn.Parameter(linear.weight.detach().t().contiguous().t())
    return linear


def is_term_major(linear: nn.Linear) -> bool:
    return linear.weight.t().is_contiguous()


def bag_inputs(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A sparse ``(B, input_dim)`` batch as an embedding bag's ``(ids, offsets, weights)``: ``(nnz,), (B,), (nnz,)``.

    Example:
        >>> x = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]]).to_sparse()
        >>> [t.tolist() for t in bag_inputs(x)]
        [[1, 0, 2], [0, 1, 1], [2.0, 1.0, 3.0]]
    """
    x = x.to_sparse_coo().coalesce()  # no-ops for the datamodule's coalesced COO batches
    rows, ids = x.indices()  # (nnz,) sorted by row
    offsets = torch.zeros(x.shape[0], dtype=torch.long)
    offsets[1:] = torch.bincount(rows, minlength=x.shape[0])[:-1].cumsum(0)  # (B,) where each row's terms start
    return ids, offsets, x.values()


def term_sum(table: torch.Tensor, x: torch.Tensor, sparse: bool = False) -> torch.Tensor:
    """``x @ table`` for a sparse ``(B, input_dim)`` batch and an ``(input_dim, out)`` table: per example, the
    rows of its terms scaled by their values and summed, ``(B, out)``; ``sparse`` gives the table a sparse gradient."""
    ids, offsets, weights = bag_inputs(x)
    return F.embedding_bag(ids, table, offsets, mode="sum", per_sample_weights=weights, sparse=sparse)


def row_view(linear: nn.Linear) -> torch.Tensor:
    """A term-major ``linear``'s weight as an ``(in, out)`` table: the same storage, a leaf of its own for sparse
    gradients (:func:`term_sum` with ``sparse=True``). Training the table trains the layer: the same numbers.

    Example:
        >>> linear = nn.Linear(4, 3)
        >>> rows = row_view(term_major(linear))
        >>> x = torch.tensor([[0.0, 2.0, 0.0, 1.0]]).to_sparse()
        >>> torch.allclose(term_sum(rows, x) + linear.bias, linear(x.to_dense()))
        True
        >>> term_sum(rows, x, sparse=True).sum().backward()
        >>> rows.grad.is_sparse, sorted(rows.grad.coalesce().indices()[0].tolist())
        (True, [1, 3])
    """
    if not is_term_major(linear):
        raise ValueError("Expected a term-major Linear layer (modules.term_rows.term_major), got a row-major weight.")
    return linear.weight.detach().t().requires_grad_()  # (in, out), shares the weight's storage


def views(rows: torch.Tensor, linear: nn.Module) -> bool:
    """Whether ``rows`` is ``linear``'s weight (``False`` for another layer type, a copy, a moved weight)."""
    return type(linear) is nn.Linear and rows.data_ptr() == linear.weight.data_ptr() and is_term_major(linear)


def all_reduce_rows(rows: torch.Tensor) -> None:
    """Average ``rows``' sparse gradient over the processes of the default group, as DDP averages dense ones: the
    processes exchange the rows each of them used (gloo's sparse all-reduce), not the whole table."""
    torch.distributed.all_reduce(rows.grad)  # in place: the sum of every process's rows
    rows.grad.div_(torch.distributed.get_world_size())


def check_sparse_optimizer(optimizer: torch.optim.Optimizer, group: dict) -> None:
    """Refuse, in one line, an optimizer that cannot take the sparse row gradients of ``group`` (the rows' group)."""
    name = type(optimizer).__name__
    if not isinstance(optimizer, SPARSE_OPTIMIZERS):
        raise ConfigError(
            f"Expected an optimizer that takes sparse gradients with `sparse_first_layer` (SGD with `momentum: 0.0` "
            f"in `first_layer_param_group`, or Adagrad), got {name}. Pick one, or set "
            "--model.init_args.sparse_first_layer false for a dense first layer."
        )
    for key in ("momentum", "weight_decay"):
        if group.get(key, 0):
            raise ConfigError(
                f"Expected `{key}` 0 for the first layer's rows with `sparse_first_layer` ({name} would update every "
                f"row every step), got {group[key]}. Set `first_layer_param_group: {{{key}: 0.0}}` or "
                "--model.init_args.sparse_first_layer false."
            )
