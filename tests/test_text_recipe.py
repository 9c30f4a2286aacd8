"""The recommended text recipe against a C-tuned LogisticRegression on a real 14-class corpus (offline mirror)."""

from __future__ import annotations

import statistics

import pytest

from cli import QuantlightCLI
from datamodules.text_baseline import tuned_logistic_regression
from tests.helpers import REPO


@pytest.mark.slow
@pytest.mark.real_data
def test_recommended_recipe_beats_tuned_logistic_regression(mirror, tmp_path):
    """Mean test accuracy over 3 seeds (split and training seed together), on the same split and vectors."""
    corpus = mirror / "debian-packages" / "descriptions.csv"
    recipe, reference = [], []
    for seed in (0, 1, 2):
        cli = QuantlightCLI(
            args=[
                "fit", "-c", str(REPO / "configs/text_mlp.yaml"), "--data.init_args.path", str(corpus),
                "--seed_everything", str(seed), "--data.init_args.seed", str(seed),
                "--trainer.logger.init_args.save_dir", str(tmp_path / str(seed)),
                "--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false",
                # best.ckpt (val/acc) and its test after fit; no quantization report here
                "--trainer.callbacks", "[]", "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
                "--trainer.callbacks.monitor=val/acc", "--trainer.callbacks.mode=max",
            ]
        )  # fmt: skip
        recipe.append(float(cli.trainer.callback_metrics["test/acc"]))
        reference.append(tuned_logistic_regression(cli.datamodule)[0])
    assert cli.datamodule.num_classes == 14
    assert statistics.mean(recipe) >= statistics.mean(reference), (recipe, reference)
