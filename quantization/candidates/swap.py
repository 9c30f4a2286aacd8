"""Swap the ``nn.Linear`` layers of a deep copy of a model; every other layer stays as written.

Any architecture whose weights live in ``nn.Linear`` layers can then be quantized: residuals,
norms, embeddings and custom ``forward`` code run unchanged, in fp32, around the swapped layers.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Collection

from torch import nn


def linear_layers(model: nn.Module) -> dict[str, nn.Linear]:
    """Every ``nn.Linear`` of ``model`` by qualified name, in registration order.

    >>> list(linear_layers(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))))
    ['0', '2']
    """
    return {name: module for name, module in model.named_modules() if type(module) is nn.Linear}


def check_keep_fp32(model: nn.Module, keep_fp32: Collection[str]) -> None:
    """Refuse, in one line, a ``keep_fp32`` name that is not an ``nn.Linear`` of ``model``.

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> check_keep_fp32(net, frozenset({"2"}))
    >>> check_keep_fp32(net, frozenset({"1"}))
    Traceback (most recent call last):
    ...
    ValueError: Expected `keep_fp32` to name nn.Linear layers of the model ('0', '2'), got '1'.
    """
    if isinstance(keep_fp32, str):  # a bare name would be read as a set of characters
        raise ValueError(f"Expected `keep_fp32` to be a set of layer names, got the string {keep_fp32!r}.")
    valid = list(linear_layers(model))
    unknown = sorted(set(keep_fp32) - set(valid))
    if unknown:
        names = ", ".join(map(repr, valid))
        raise ValueError(f"Expected `keep_fp32` to name nn.Linear layers of the model ({names}), got {unknown[0]!r}.")


def swap_linears(model: nn.Module, replace: Callable[[str, nn.Linear], nn.Module]) -> nn.Module:
    """A deep copy of ``model`` (eval mode) whose every ``nn.Linear`` ``name`` is ``replace(name, layer)``.

    ``model`` is only read.

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU())
    >>> swap_linears(net, lambda name, layer: nn.Identity())[0]
    Identity()
    >>> net[0]
    Linear(in_features=4, out_features=3, bias=True)
    """
    copied = copy.deepcopy(model).eval()
    if type(copied) is nn.Linear:  # the model is one layer, named ""
        return replace("", copied)
    for name, layer in linear_layers(copied).items():
        parent_name, _, child = name.rpartition(".")
        parent = copied.get_submodule(parent_name) if parent_name else copied
        setattr(parent, child, replace(name, layer))
    return copied


def refusals(model: nn.Module, refuses: Callable[[str, nn.Module], str | None] | None) -> list[str]:
    """Why ``model`` cannot be quantized by a method: no Linear layer, or the method's own refusals."""
    if not linear_layers(model):
        return [f"{type(model).__name__} has no nn.Linear layer to quantize"]
    if refuses is None:
        return []
    found = (refuses(name, module) for name, module in model.named_modules() if name)
    return [reason for reason in found if reason]
