"""Vocabulary and hidden-unit pruning of a text model: a smaller copy that keeps the first layer's columns (terms)
and the first hidden layer's units that matter, what that copy reads, and the vectorizer state that produces it.

Dropping terms changes each text's TF-IDF norm: a vectorizer that knows only the kept terms (with their idf)
normalizes over them, which equals selecting the kept columns of the full vector and dividing each row by its new
L2 norm (:func:`select_columns`). Training batches are derived from the full ones that way; a bundle's featurizer
simply knows fewer terms (:func:`prune_preprocessing`). No Lightning here: the fine-tuning that follows pruning is
``callbacks.vocabulary_pruning``'s.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from quantization.artifacts.embedding_bag import first_linear
from runtime import featurizer

Importance = Literal["weight", "weight_x_input", "weight_x_rms_input", "frequency"]
IMPORTANCE: tuple[str, ...] = Importance.__args__
# Layers between the first Linear and the next that act on each unit alone: a unit dropped before them is dropped
# after them, so the next Linear loses the matching input column.
_ELEMENTWISE = (nn.ReLU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.ELU, nn.Tanh, nn.Sigmoid, nn.Dropout, nn.Identity)


def first_layer(model: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` that reads the model's input (a Linear model, or an ``nn.Sequential`` that starts with one).

    Raises:
        ValueError: The model has no such layer: its inputs cannot be pruned column by column.
    """
    name = first_linear(model)
    if name is None:
        raise ValueError(
            f"Vocabulary pruning needs a model whose first layer is an nn.Linear over the input (a Linear, or an "
            f"nn.Sequential that starts with one); {type(model).__name__} is not one."
        )
    return model if name == "" else model[0]


def hidden_layer(model: nn.Module) -> int:
    """The index, in an ``nn.Sequential``, of the Linear that reads the first layer's units (elementwise layers,
    e.g. ReLU and Dropout, between them).

    >>> hidden_layer(nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4, 2)))
    3

    Raises:
        ValueError: No such Linear: the first layer's outputs are the model's (a Linear model) or pass through a
            layer that mixes units.
    """
    first_layer(model)
    if isinstance(model, nn.Sequential):
        for index, layer in enumerate(list(model)[1:], start=1):
            if type(layer) is nn.Linear:
                return index
            if not isinstance(layer, _ELEMENTWISE):
                break
    raise ValueError(
        f"Hidden-unit pruning needs an nn.Sequential whose first Linear feeds the next through elementwise layers "
        f"(ReLU, Dropout, ...); {type(model).__name__} has none. Set `hidden` to null."
    )


def input_statistics(inputs: Iterable[torch.Tensor], input_dim: int) -> dict[str, torch.Tensor]:
    """Per input column over ``inputs`` (sparse COO or dense ``(B, D)`` batches): ``mean_abs``, ``mean_square`` and
    ``frequency`` (the share of rows where it is non-zero), ``(D,)`` float64 each."""
    total_abs = torch.zeros(input_dim, dtype=torch.float64)
    total_square = torch.zeros(input_dim, dtype=torch.float64)
    nonzero = torch.zeros(input_dim, dtype=torch.float64)
    rows = 0
    for x in inputs:
        if x.layout == torch.strided:
            x = x.to_sparse_coo()
        x = x.coalesce()
        columns, values = x.indices()[1], x.values().double()
        total_abs.index_add_(0, columns, values.abs())
        total_square.index_add_(0, columns, values.square())
        nonzero.index_add_(0, columns, (values != 0).double())
        rows += x.shape[0]
    if rows == 0:
        raise ValueError("Expected at least one training batch to measure the inputs on, got none.")
    return {"mean_abs": total_abs / rows, "mean_square": total_square / rows, "frequency": nonzero / rows}


def input_importance(model: nn.Module, statistics: Mapping[str, torch.Tensor], rule: str) -> torch.Tensor:
    """How much each input column (term) matters to ``model``, ``(D,)`` float64, by ``rule``:

    - ``weight``: the L2 norm of its column of the first layer's weight (FastText.zip keeps the words whose
      embeddings have the largest norms);
    - ``weight_x_input``: that norm times the term's mean absolute input on the training split;
    - ``weight_x_rms_input``: that norm times the term's root-mean-square input: the RMS of what the term adds to
      the first layer's pre-activations over the training texts;
    - ``frequency``: the share of training texts that use it (what a smaller ``max_features`` would keep).

    >>> net = nn.Linear(3, 2)
    >>> _ = net.weight.data.copy_(torch.tensor([[3.0, 0.0, 1.0], [4.0, 1.0, 0.0]]))
    >>> stats = {"mean_abs": torch.tensor([0.25, 0.5, 0.0], dtype=torch.float64),
    ...          "mean_square": torch.tensor([0.0625, 0.25, 0.0], dtype=torch.float64),
    ...          "frequency": torch.tensor([0.25, 0.5, 0.0], dtype=torch.float64)}
    >>> [input_importance(net, stats, rule).tolist() for rule in ("weight", "weight_x_input", "frequency")]
    [[5.0, 1.0, 1.0], [1.25, 0.5, 0.0], [0.25, 0.5, 0.0]]
    """
    if rule not in IMPORTANCE:
        raise ValueError(f"Expected `importance` to be one of ({', '.join(IMPORTANCE)}), got {rule!r}.")
    norms = first_layer(model).weight.detach().double().norm(dim=0)  # (H, D) -> (D,)
    if rule == "weight":
        return norms
    if rule == "weight_x_input":
        return norms * statistics["mean_abs"]
    if rule == "weight_x_rms_input":
        return norms * statistics["mean_square"].sqrt()
    return statistics["frequency"].clone()


def unit_importance(model: nn.Module, inputs: Iterable[torch.Tensor]) -> torch.Tensor:
    """How much each unit of the first hidden layer matters, ``(H,)`` float64: its mean activation over ``inputs``
    times the L2 norm of its column of the next Linear's weight (what it adds, on average, to the next layer)."""
    index = hidden_layer(model)
    head = model[:index]  # the first Linear and the elementwise layers after it (a slice keeps the model's class)
    reads_sparse = type(head).forward is not nn.Sequential.forward  # e.g. the text MLP's: it reads term bags
    total, rows = torch.zeros(model[index].in_features, dtype=torch.float64), 0
    with torch.no_grad():
        for x in inputs:
            x = x if x.layout == torch.strided or reads_sparse else x.to_dense()  # (B, K) of the kept terms
            total += head.eval()(x).double().abs().sum(dim=0)  # (B, K) -> (B, H) -> (H,)
            rows += x.shape[0]
    if rows == 0:
        raise ValueError("Expected at least one training batch to measure the hidden units on, got none.")
    return total / rows * model[index].weight.detach().double().norm(dim=0)


def keep_top(scores: torch.Tensor, count: int) -> torch.Tensor:
    """The indices of the ``count`` largest ``scores``, ascending (ties go to the lower index: deterministic).

    >>> keep_top(torch.tensor([0.5, 2.0, 0.5, 1.0]), 3).tolist()
    [0, 1, 3]
    """
    if not 1 <= count <= len(scores):
        raise ValueError(f"Expected to keep 1..{len(scores)} of {len(scores)}, got {count}.")
    order = torch.sort(-scores.double(), stable=True).indices  # best first, ties by index
    return torch.sort(order[:count]).values


def prune_model(model: nn.Module, columns: torch.Tensor, units: torch.Tensor | None = None) -> nn.Module:
    """A copy of ``model`` (eval mode) whose first Linear reads only the input ``columns`` (kept terms, ascending)
    and, with ``units``, keeps only those outputs (and the next Linear only those inputs). ``model`` is only read.

    >>> net = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> small = prune_model(net, torch.tensor([0, 3]), torch.tensor([1, 2]))
    >>> small[0], small[2]
    (Linear(in_features=2, out_features=2, bias=True), Linear(in_features=2, out_features=2, bias=True))
    >>> x = torch.zeros(1, 5); x[0, 3] = 1.0  # a text of kept terms only
    >>> kept_units = torch.relu(net[0](x))[:, [1, 2]]
    >>> torch.allclose(small(x[:, [0, 3]]), kept_units @ net[2].weight[:, [1, 2]].T + net[2].bias)
    True
    """
    copied = copy.deepcopy(model).eval()
    first = first_layer(copied)
    columns = torch.as_tensor(columns, dtype=torch.long)
    weight, bias = first.weight.detach()[:, columns], None if first.bias is None else first.bias.detach()
    if units is not None:
        units = torch.as_tensor(units, dtype=torch.long)
        index = hidden_layer(copied)
        weight, bias = weight[units], None if bias is None else bias[units]
        copied[index] = _linear(copied[index].weight.detach()[:, units], copied[index].bias)
    layer = _linear(weight, bias)
    if copied is first:
        return layer
    copied[0] = layer
    return copied


def _linear(weight: torch.Tensor, bias: torch.Tensor | None) -> nn.Linear:
    """A plain ``nn.Linear`` holding copies of ``weight`` ``(out, in)`` and ``bias``."""
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias.detach())
    return layer


def select_columns(x: torch.Tensor, columns: torch.Tensor, normalize: bool) -> torch.Tensor:
    """The ``columns`` (ascending) of a ``(B, D)`` batch, ``(B, K)``, each row divided by its new L2 norm when
    ``normalize`` (a TF-IDF vectorizer that knew only those terms would give these values): sparse stays sparse.

    >>> x = torch.tensor([[0.6, 0.0, 0.8], [0.0, 1.0, 0.0]])
    >>> select_columns(x.to_sparse(), torch.tensor([0, 1]), normalize=True).to_dense().tolist()
    [[1.0, 0.0], [0.0, 1.0]]
    """
    return KeptColumns(columns, normalize)(x)


class KeptColumns:
    """:func:`select_columns` as a callable for many batches of one width (a fine-tuning's every step): each column's
    new position (-1 when dropped) is looked up in a table built once, not per batch (0.8 MB for 100,000 terms)."""

    def __init__(self, columns: torch.Tensor, normalize: bool) -> None:
        self.columns = torch.as_tensor(columns, dtype=torch.long)
        self.normalize = normalize
        self._position = torch.empty(0, dtype=torch.long)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        columns = self.columns
        if x.layout == torch.strided:
            kept = x[:, columns].double()  # (B, K)
            if self.normalize:
                kept = kept / kept.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny)
            return kept.to(x.dtype)
        x = x.to_sparse_coo().coalesce()
        if len(self._position) != x.shape[1]:
            self._position = torch.full((x.shape[1],), -1, dtype=torch.long)
            self._position[columns] = torch.arange(len(columns))
        rows, old = x.indices()
        new = self._position[old]
        keep = new >= 0
        rows, new, values = rows[keep], new[keep], x.values()[keep].double()
        if self.normalize:
            norms = torch.zeros(x.shape[0], dtype=torch.float64).index_add_(0, rows, values.square()).sqrt()
            values = values / norms[rows]
        size = (x.shape[0], len(columns))
        indices = torch.stack([rows, new])  # still sorted by row, then column: the kept columns keep their order
        return torch.sparse_coo_tensor(indices, values.to(x.dtype), size, is_coalesced=True, check_invariants=False)


def normalizes(preprocessing: Mapping[str, Any]) -> bool:
    """Whether a text featurizer divides each row by its L2 norm (TF-IDF's default), so that dropping terms
    changes the kept terms' values too."""
    vectorizer = preprocessing.get("vectorizer") or {}
    return vectorizer.get("kind") == "tfidf" and vectorizer.get("norm", "l2") == "l2"


def prune_preprocessing(preprocessing: Mapping[str, Any], columns: Sequence[int] | torch.Tensor) -> dict[str, Any]:
    """A text datamodule's ``preprocessing()`` (plain data) restricted to the terms of ``columns`` (ascending): their
    vocabulary, renumbered 0..K-1 in the same order, and their idf; every other setting as it was.

    >>> state = {"input": "text", "vectorizer": {"kind": "tfidf", "vocabulary": {"a": 0, "b": 1, "c": 2},
    ...          "idf": [1.0, 2.0, 3.0]}}
    >>> prune_preprocessing(state, [0, 2])["vectorizer"]
    {'kind': 'tfidf', 'vocabulary': {'a': 0, 'c': 1}, 'idf': [1.0, 3.0]}
    """
    if preprocessing.get("input") != "text" or not isinstance(preprocessing.get("vectorizer"), Mapping):
        raise ValueError("Vocabulary pruning needs text preprocessing with a fitted vectorizer (a vocabulary).")
    vectorizer = preprocessing["vectorizer"]
    vocabulary = vectorizer["vocabulary"]
    terms = sorted(vocabulary, key=vocabulary.__getitem__) if isinstance(vocabulary, Mapping) else list(vocabulary)
    columns = [int(c) for c in columns]
    pruned = dict(vectorizer) | {"vocabulary": {terms[c]: i for i, c in enumerate(columns)}}
    if vectorizer.get("idf") is not None:
        pruned["idf"] = [float(vectorizer["idf"][c]) for c in columns]
    return dict(preprocessing) | {"vectorizer": pruned}


def featurized_batches(
    preprocessing: Mapping[str, Any],
    texts: Sequence[str],
    labels: torch.Tensor,
    batch_size: int,
    terms: Sequence[Sequence[str]] | None = None,
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Raw texts as a bundle with this preprocessing reads them (``runtime.featurizer``), in sparse ``(B, K)``
    batches with their labels: what a pruned row is measured on. The featurizer's non-zeros of every text at once
    (``TextFeaturizer.nonzeros``) go to coalesced sparse tensors directly, without a dense ``(B, K)`` matrix.
    ``terms``: the texts' terms (``TextFeaturizer.terms``) when already found; the same for every vocabulary cut
    from one vectorizer, so the pruned sizes tokenize a split once."""
    featurize = featurizer(preprocessing)
    rows, ids, values = featurize.nonzeros(featurize.terms(texts) if terms is None else terms)
    values = values.astype(np.float32)
    kept = values != 0  # as a dense matrix's non-zeros: a value that rounds to 0 in float32 is left out
    rows, ids, values = rows[kept], ids[kept], values[kept]
    ends = np.searchsorted(rows, np.arange(batch_size, len(texts) + batch_size, batch_size))
    out, start = [], 0
    for i, end in zip(range(0, len(texts), batch_size), ends, strict=True):
        indices = torch.from_numpy(np.stack([rows[start:end] - i, ids[start:end]]))
        shape = (min(batch_size, len(texts) - i), featurize.input_dim)
        x = torch.sparse_coo_tensor(
            indices, torch.from_numpy(values[start:end]), shape, is_coalesced=True, check_invariants=False
        )  # built sorted
        out.append((x, labels[i : i + batch_size]))
        start = end
    return out
