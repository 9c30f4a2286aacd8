"""The linear reference a text model must beat: scikit-learn's LogisticRegression on the same split and vectors."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression

from datamodules.text import TextDataModule

C_GRID = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def split_vectors(dm: TextDataModule, split: str) -> tuple:
    """The split's ``(N, input_dim)`` sparse vectors from ``dm``'s fitted vectorizer, and ``(N,)`` label indices."""
    rows = dm.split_rows(split)
    index = {name: i for i, name in enumerate(dm.classes)}
    return dm.vectorize(rows.texts), np.array([index[label] for label in rows.labels])


def tuned_logistic_regression(dm: TextDataModule, grid: tuple[float, ...] = C_GRID) -> tuple[float, float]:
    """``(test accuracy, C)``: LogisticRegression with the ``C`` of best validation accuracy (the smaller on ties).

    Fitted along the grid with warm starts (the regularization path): the same optima within ``tol``, faster.
    """
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = (split_vectors(dm, s) for s in ("train", "val", "test"))
    model, best = LogisticRegression(max_iter=2000, warm_start=True), None
    for c in sorted(grid):
        model.set_params(C=c).fit(x_train, y_train)
        val = model.score(x_val, y_val)
        if best is None or val > best[0]:
            best = (val, c, model.score(x_test, y_test))
    return best[2], best[1]
