"""What a text run's report prunes: the sizes of the smaller models (terms and hidden units kept), the methods each
is quantized with, the importance rule and the fine-tuning (``prune:`` of the quantization callback), checked in one
line per bad value. ``callbacks.vocabulary_pruning`` builds and measures them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from callbacks.fine_tuning import FineTuneSettings
from quantization import check_methods
from quantization.candidates.pruning import IMPORTANCE

_KEYS = ("sizes", "methods", "importance", "epochs", "lr_scale", "examples_per_epoch")


@dataclass(frozen=True)
class PruneSize:
    """One pruned model: the terms of the vocabulary it keeps, and the units of the first hidden layer.

    Args:
        terms: Vocabulary terms (first-layer columns) kept, the most important first: a count (an integer >= 1), or
            a share of the vocabulary (a number between 0 and 1, e.g. ``0.08``), so the size follows the corpus.
        hidden: Units of the first hidden layer kept; ``None`` keeps them all (as does a model without one).
        share: With a count, keep this share of the vocabulary instead when it is more terms (a large vocabulary's
            pruned model keeps as large a part of it as a small one's); ``None``: the count alone.
    """

    terms: int | float
    hidden: int | None = None
    share: float | None = None

    def __post_init__(self) -> None:
        share = isinstance(self.terms, float) and 0 < self.terms < 1
        count = isinstance(self.terms, int) and not isinstance(self.terms, bool) and self.terms >= 1
        if not (share or count):
            raise ValueError(
                f"Expected `prune.sizes[].terms` an integer >= 1 or a share of the vocabulary between 0 and 1, "
                f"got {self.terms!r}."
            )
        if self.hidden is not None and (
            isinstance(self.hidden, bool) or not isinstance(self.hidden, int) or self.hidden < 1
        ):
            raise ValueError(f"Expected `prune.sizes[].hidden` an integer >= 1 or null, got {self.hidden!r}.")
        if self.share is not None and not (isinstance(self.share, float) and 0 < self.share < 1):
            raise ValueError(f"Expected `prune.sizes[].share` a number between 0 and 1 or null, got {self.share!r}.")

    def count(self, vocabulary: int) -> int:
        """The terms kept of a ``vocabulary``-term model.

        >>> PruneSize(0.08).count(24_659), PruneSize(2000).count(24_659), PruneSize(2000, share=0.08).count(100_000)
        (1973, 2000, 8000)
        """
        count = max(1, round(self.terms * vocabulary)) if isinstance(self.terms, float) else self.terms
        return max(count, round(self.share * vocabulary)) if self.share is not None else count


@dataclass(frozen=True)
class PruneSettings(FineTuneSettings):
    """Which pruned models a text run's report measures, and how each is chosen and fine-tuned.

    Args:
        sizes: One pruned model per entry (:class:`PruneSize`); an entry that keeps the whole vocabulary is skipped.
        methods: Each pruned model is quantized with these (``fp32`` too when named) and measured as its own row.
        importance: How the kept terms are chosen (``quantization.candidates.pruning.input_importance``):
            ``weight`` (the norm of the term's first-layer weights; measured best after fine-tuning here, see
            docs/text.md),
            ``weight_x_input``, ``weight_x_rms_input`` or ``frequency``.
        epochs: Fine-tuning epochs of each pruned model, from the best checkpoint's weights.
        lr_scale: The recipe's learning rate times this, cosine-annealed to 0 over ``epochs``: 1/2 (1/8, QAT's,
            recovered less of what hidden-unit pruning costs on the 14-section Debian corpus).
        examples_per_epoch: Each fine-tuning epoch reads at most this many training examples (a new random sample
            every epoch): 32,768 leaves the tweets and the Debian corpus whole (16,200 and 10,400 training texts) and
            bounds a large corpus's fine-tuning to a share of its fit; ``None``: the whole split.
    """

    sizes: tuple[PruneSize, ...] = ()
    methods: tuple[str, ...] = ("onnx_int4",)
    importance: str = "weight"
    epochs: int = 4
    lr_scale: float = 0.5
    examples_per_epoch: int | None = 32_768

    def __post_init__(self) -> None:
        super().__post_init__()
        check_methods(list(self.methods))
        if self.importance not in IMPORTANCE:
            raise ValueError(
                f"Expected `prune.importance` to be one of ({', '.join(IMPORTANCE)}), got {self.importance!r}."
            )

    @classmethod
    def kind(cls) -> str:
        return "prune"

    @classmethod
    def from_values(cls, values: Mapping[str, Any] | None) -> PruneSettings:
        """The settings from plain config values (``sizes`` as ``[{terms: 2000, hidden: 32}, ...]``), refusing an
        unknown key in one line.

        >>> PruneSettings.from_values({"sizes": [{"terms": 2000, "hidden": 32}], "epochs": 2}).sizes
        (PruneSize(terms=2000, hidden=32, share=None),)
        """
        values = dict(values or {})
        unknown = sorted(set(values) - set(_KEYS))
        if unknown:
            raise ValueError(f"Expected `prune` keys in ({', '.join(_KEYS)}), got {unknown[0]!r}.")
        sizes = []
        for size in values.pop("sizes", None) or ():
            if not isinstance(size, Mapping) or not set(size) <= {"terms", "hidden", "share"} or "terms" not in size:
                raise ValueError(
                    f"Expected each of `prune.sizes` as {{terms: <int>, hidden: <int or null>, share: <0-1 or null>}}, "
                    f"got {size!r}."
                )
            sizes.append(PruneSize(size["terms"], size.get("hidden"), size.get("share")))
        if "methods" in values:
            values["methods"] = tuple(values["methods"] or ())
        return cls(sizes=tuple(sizes), **values)
