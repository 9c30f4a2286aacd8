"""An ONNX artifact in ONNX Runtime: dense feature rows or term bags in, ``(B, num_classes)`` logits out.

A sparse-input artifact (the text models') reads two inputs, ``ids`` and ``weights`` (a :class:`Bag`),
and computes its first layer from the rows of the terms present; any other artifact reads one dense
``(B, input_dim)`` input. The call is kept lean because at batch 1 ONNX Runtime's own per-call cost is
a large part of a prediction.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .features import Bag

TERM_IDS, TERM_WEIGHTS = "ids", "weights"  # a sparse-input artifact's inputs: (B, L) int64 and (B, L) float32


class OnnxModel:
    """An ONNX model on ONNX Runtime's CPU provider with ``num_threads`` intra-op threads.

    Args:
        model: The ``.onnx`` file's bytes.
        num_threads: Intra-op threads (inter-op is 1: the graphs are chains).
    """

    def __init__(self, model: bytes, num_threads: int = 1) -> None:
        import onnxruntime as ort  # loaded with the first model, not with the package (the CLI reads bundles' files)

        options = ort.SessionOptions()
        options.intra_op_num_threads = num_threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        self.sparse_input = sorted(i.name for i in inputs) == sorted((TERM_IDS, TERM_WEIGHTS))
        self.input_name = inputs[0].name
        width = inputs[0].shape[-1] if not self.sparse_input else None
        self.input_dim: int | None = width if isinstance(width, int) else None
        self._outputs = [self.session.get_outputs()[0].name]
        self._options = ort.RunOptions()
        # InferenceSession.run checks the feed's names in Python before calling its binding; the feeds built
        # here always match, and skipping the check saves ~1.5 us of a ~10 us call at batch 1.
        binding = getattr(self.session, "_sess", None)
        self._run = binding.run if binding is not None and hasattr(binding, "run") else self.session.run

    def feeds(self, features: np.ndarray | Bag) -> dict[str, np.ndarray]:
        """What the session reads: a :class:`Bag` for a sparse-input model (dense rows are converted), else
        dense float32 rows (a bag is densified)."""
        if self.sparse_input:
            bag = features if isinstance(features, Bag) else Bag.from_dense(np.asarray(features))
            return {TERM_IDS: bag.ids, TERM_WEIGHTS: bag.weights}
        if isinstance(features, Bag):
            if self.input_dim is None:
                raise ValueError("This dense-input model does not declare its input width: pass dense rows.")
            features = features.dense(self.input_dim)
        return {self.input_name: np.ascontiguousarray(features, dtype=np.float32)}

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """``(B, num_classes)`` float32 logits of prepared :meth:`feeds`: the call a latency figure times."""
        return self._run(self._outputs, feeds, self._options)[0]

    def logits(self, features: np.ndarray | Bag) -> np.ndarray:
        """``(B, num_classes)`` float32 logits of dense rows or a :class:`Bag`."""
        return self.run(self.feeds(features))


def quiet_run_options() -> Any:
    """Run options under which ONNX Runtime does not log a refused run to stderr (the caller reports it)."""
    import onnxruntime as ort

    options = ort.RunOptions()
    options.log_severity_level = 4  # fatal only
    return options
