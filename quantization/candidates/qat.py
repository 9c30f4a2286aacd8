"""Quantization-aware training's model side: ``nn.Linear`` layers that train through a method's fake quantization.

:func:`prepare_qat` swaps every ``nn.Linear`` of a deep copy for a :class:`FakeQuantLinear` that keeps
the fp32 ("latent") weights as its parameters and runs its forward on ``method.fake_quantize(weight)``,
the weights the method's artifact will hold, bit for bit; gradients pass straight through. The
parameters keep their names, so a state dict moves between the plain model and its QAT copy unchanged,
and quantizing the trained plain model with the method gives the model QAT trained.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from quantization.candidates.swap import swap_linears
from quantization.registry import METHODS, Method, check_methods


class FakeQuantLinear(nn.Linear):
    """An ``nn.Linear`` whose forward uses its weights as ``method`` will store them.

    Args:
        linear: The layer to copy (shape, weights, bias).
        method: A registered method with ``fake_quantize``.
        settings: That method's settings.
    """

    def __init__(self, linear: nn.Linear, method: Method, settings: Any) -> None:
        super().__init__(linear.in_features, linear.out_features, bias=linear.bias is not None)
        self.load_state_dict(linear.state_dict())
        self.method, self.settings = method, settings

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.method.fake_quantize(self.weight, self.settings), self.bias)  # (B, in) -> (B, out)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method.name}"


def qat_methods() -> list[str]:
    """The registered methods quantization-aware training can target (those with ``fake_quantize``)."""
    return [name for name, method in METHODS.items() if method.fake_quantize is not None]


def check_qat_method(name: str) -> Method:
    """The method ``name``, refusing one without fake quantization in one line."""
    check_methods([name])
    if METHODS[name].fake_quantize is None:
        raise ValueError(
            f"Expected a `qat` method with fake quantization, one of ({', '.join(qat_methods())}), got {name!r}."
        )
    return METHODS[name]


def prepare_qat(model: nn.Module, method: str, settings: Any) -> nn.Module:
    """A deep copy of ``model`` whose every ``nn.Linear`` trains through ``method``'s fake quantization.

    ``model`` is only read; the copy is in eval mode (call ``.train()`` to train it).

    >>> net = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> qat = prepare_qat(net, "int3_weight_only", METHODS["int3_weight_only"].make_settings({"group_size": None}))
    >>> qat[0], list(qat.state_dict()) == list(net.state_dict())
    (FakeQuantLinear(in_features=4, out_features=3, bias=True, method=int3_weight_only), True)
    """
    spec = check_qat_method(method)
    return swap_linears(model, lambda name, layer: FakeQuantLinear(layer, spec, settings))
