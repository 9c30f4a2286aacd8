"""The text pipeline on the real tweets corpus of the offline mirror (negative vs positive)."""

from __future__ import annotations

import pytest
from lightning.pytorch import Trainer, seed_everything

from datamodules.text import TextDataModule
from modules import MLP


@pytest.mark.real_data
@pytest.mark.slow
def test_one_epoch_on_tweets_beats_the_majority_class_by_far(mirror):
    corpus = mirror / "sentiment-tweets" / "tweets.csv"
    if not corpus.is_file():
        pytest.fail(f"The offline mirror at {mirror} lacks sentiment-tweets/tweets.csv.")
    seed_everything(0)
    dm = TextDataModule(str(corpus), classes=["negative", "positive"])
    assert dm.input_dim == 5000  # the corpus has far more terms than max_features
    assert [len(dm.split_rows(s)) for s in ("train", "val", "test")] == [16198, 2314, 4628]  # 70/10/20
    model = MLP(input_dim=dm.input_dim, num_classes=dm.num_classes)
    trainer = Trainer(
        max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)
    assert result["test/acc"] > 0.86  # majority class 70 %; 10 epochs with best-val selection reach 87.5-88 %
