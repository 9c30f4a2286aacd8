"""A torch artifact's first Linear over term weights, run as an embedding bag: what a sparse batch costs is
its terms' rows, not the vocabulary's width (``F.embedding_bag`` with per-sample weights).

Measured here, 1 thread, a 5000 -> 512 layer, 16 terms a text: batch 1, 17 us (index_select of the used
columns, as training does: 44 us; ``torch.sparse.mm``: 19 us); batch 256, 0.21 ms (9.7 ms; 2.9 ms).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class EmbeddingBagLinear(nn.Module):
    """``x @ W^T + b`` with ``W^T`` held as rows, one per input column: dense ``(B, D)`` rows are multiplied,
    a sparse COO batch sums the rows of its non-zeros scaled by their values.

    Args:
        rows: ``(D, H)`` fp32, ``W^T``.
        bias: ``(H,)`` fp32, or ``None``.

    Example:
        >>> layer = nn.Linear(6, 3)
        >>> bag = EmbeddingBagLinear.from_weight(layer.weight, layer.bias)
        >>> x = torch.tensor([[0.0, 2.0, 0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
        >>> torch.allclose(bag(x.to_sparse()), layer(x)) and torch.allclose(bag(x), layer(x))
        True
    """

    def __init__(self, rows: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.register_buffer("rows", rows)
        self.register_buffer("bias", bias)

    @classmethod
    def from_weight(cls, weight: torch.Tensor, bias: torch.Tensor | None) -> EmbeddingBagLinear:
        """From an ``(H, D)`` Linear weight (copied as ``(D, H)`` rows) and its bias."""
        return cls(weight.detach().float().t().contiguous(), None if bias is None else bias.detach().float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.layout == torch.strided:
            out = x @ self.rows  # (B, D) @ (D, H)
        else:
            x = x.coalesce()  # sorted by row, then column
            rows, columns = x.indices()
            offsets = torch.searchsorted(rows, torch.arange(x.shape[0], device=rows.device))  # (B,) first non-zero
            out = F.embedding_bag(columns, self.rows, offsets, mode="sum", per_sample_weights=x.values())  # (B, H)
        return out if self.bias is None else out + self.bias
