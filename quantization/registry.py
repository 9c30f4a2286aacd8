"""The registry of quantization methods. Each file in ``quantization/methods/`` registers one
(importing ``quantization`` imports them all).

A :class:`Method` declares, in one place, its name, its settings (a frozen dataclass whose
defaults are the recommended choice), what it needs (calibration data), how it quantizes a
model and how its artifact loads back into something that runs. Everything else (the names
a config accepts, artifact suffixes, which methods calibrate) is asked of the registry.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

BASELINE = "fp32"


@dataclass(frozen=True)
class QuantizationData:
    """The inputs a method may use besides the model.

    Args:
        example: A dense input batch, ``(B, input_dim)``: export shapes and dtypes come from it.
        calibration: Training batches that static methods calibrate on: dense, or sparse term weights that a
            method densifies one batch at a time as it reads them.
        keep_fp32: Qualified names of ``nn.Linear`` layers (as ``swap.linear_layers`` names them) that the
            method leaves in fp32: stored and run as plain fp32 Linear layers, everything else quantized.
        sparse_input: The inputs are sparse term weights (TF-IDF, counts): an artifact whose first layer is a
            Linear over the input reads term ids and weights instead of dense rows, where the method can
            (``quantization.artifacts.embedding_bag``).
    """

    example: torch.Tensor
    calibration: list[torch.Tensor] = field(default_factory=list)
    keep_fp32: frozenset[str] = frozenset()
    sparse_input: bool = False


@dataclass(frozen=True)
class Artifact:
    """A quantized model as it is shipped: the file's bytes and what the method reports about it.

    Args:
        method: Registry name of the method that made it.
        data: The exact bytes written to disk (their length is the reported size).
        suffix: ``.pt`` (weights-only torch payload) or ``.onnx``.
        info: Method-specific figures and facts, e.g. ``saturated_fraction``, ``bag_rows``.
        name: The report row (and file name) when it differs from ``method``, e.g. ``int3_weight_only+qat``.
    """

    method: str
    data: bytes
    suffix: str
    info: dict[str, Any] = field(default_factory=dict)
    name: str | None = None

    @property
    def size_bytes(self) -> int:
        return len(self.data)

    @property
    def label(self) -> str:
        """The row and file name: ``name``, else ``method``."""
        return self.name or self.method


class Runner(Protocol):
    """A loaded artifact: ``prepare`` converts an input once (a sparse batch to what the artifact reads: term ids
    and weights where ``sparse_input``, else dense rows), ``run`` is the call that is timed."""

    sparse_input: bool

    def prepare(self, x: torch.Tensor) -> Any: ...

    def run(self, prepared: Any) -> Any: ...

    def logits(self, x: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class Method:
    """One quantization method.

    Args:
        name: The name configs use.
        settings: Frozen dataclass of the method's settings; its defaults are the recommended ones.
        quantize: ``(model, settings, data) -> Artifact``; reads ``model``, never changes it.
        load: ``(artifact bytes, model, num_threads) -> Runner``; ``model`` is the fp32 model the
            artifact was made from (torch artifacts of non-``Sequential`` models need it).
        suffix: The artifact's file suffix.
        needs_calibration: Whether ``data.calibration`` must hold batches.
        refuses: ``(layer name, module) -> reason`` for a module the method cannot handle, or ``None``.
        summary: One line for reports and ``--help``: what it does.
        max_relative_error: The largest ``|logit - fp32 logit| / max |fp32 logit|`` its arithmetic allows on
            a small two-layer net (rounding to a step ``s`` errs by at most ``s/2``; see each method).
        fake_quantize: ``(weight, settings) -> weight`` as the artifact will hold it, differentiable
            (straight-through): set by methods that quantization-aware training can target.
        in_default_sweep: Whether ``methods: null`` (every method) runs it.
        reads_term_bags: Whether its artifact's first layer can read a text's term ids and weights (an embedding bag
            over the terms present) rather than whole vocabulary-wide rows; text runs leave the others out of
            ``methods: null`` (:func:`default_methods`).
        activations_per_call: Whether it quantizes activations with a scale computed from each call's inputs, so a
            label can depend on the other examples of the call: the report evaluates it one example a call, as a
            request is served.
    """

    name: str
    settings: type
    quantize: Callable[[nn.Module, Any, QuantizationData], Artifact]
    load: Callable[[bytes, nn.Module | None, int], Runner]
    suffix: str = ".pt"
    needs_calibration: bool = False
    refuses: Callable[[str, nn.Module], str | None] | None = None
    summary: str = ""
    max_relative_error: float = 0.0
    fake_quantize: Callable[[torch.Tensor, Any], torch.Tensor] | None = None
    in_default_sweep: bool = True
    reads_term_bags: bool = True
    activations_per_call: bool = False

    def make_settings(self, values: Mapping[str, Any] | None = None) -> Any:
        """The settings dataclass from plain values, refusing unknown keys in one line."""
        known = {f.name for f in dataclasses.fields(self.settings)}
        unknown = sorted(set(values or {}) - known)
        if unknown:
            raise ValueError(
                f"Expected `settings.{self.name}` keys in ({', '.join(sorted(known)) or 'none'}), got {unknown[0]!r}."
            )
        return self.settings(**(values or {}))

    def settings_of(self, settings: Mapping[str, Any] | Any | None) -> Any:
        """The settings dataclass from itself, plain values (:meth:`make_settings`) or ``None`` (the defaults)."""
        return self.make_settings(settings) if settings is None or isinstance(settings, Mapping) else settings


METHODS: dict[str, Method] = {}


def register(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (once per name)."""
    if method.name in METHODS:
        raise ValueError(f"Method {method.name!r} is registered twice.")
    METHODS[method.name] = method
    return method


def default_methods(term_bags: bool = False) -> list[str]:
    """The methods ``methods: null`` runs: every registered one that sweeps by default; with ``term_bags`` (text, a
    bundle fed term ids and weights) only those whose artifact reads them."""
    return [m.name for m in METHODS.values() if m.in_default_sweep and (m.reads_term_bags or not term_bags)]


def dense_only_methods() -> list[str]:
    """The default sweep's methods whose first layer reads whole dense rows (left out of a text run's default)."""
    return sorted(set(default_methods()) - set(default_methods(term_bags=True)))


def check_methods(methods: Sequence[str]) -> list[str]:
    """Validate method names; return them without repeats, the fp32 baseline first.

    >>> check_methods(["dynamic_int8", "fp16", "dynamic_int8"])
    ['fp32', 'dynamic_int8', 'fp16']
    """
    unknown = [name for name in methods if name not in METHODS]
    if unknown or isinstance(methods, str):
        got = methods if isinstance(methods, str) else unknown[0]
        raise ValueError(f"Expected `methods` to be a list of ({', '.join(METHODS)}), got {got!r}.")
    return list(dict.fromkeys([BASELINE, *methods]))
