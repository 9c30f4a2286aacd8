"""The text pipeline on the real tweets corpus of the offline mirror (negative vs positive)."""

from __future__ import annotations

import pytest
from lightning.pytorch import Trainer, seed_everything
from sklearn.linear_model import LogisticRegression

from datamodules.text import TextDataModule
from modules import MLP


@pytest.mark.real_data
@pytest.mark.slow
def test_two_epochs_on_tweets_match_scikit_learn_logistic_regression(mirror):
    corpus = mirror / "sentiment-tweets" / "tweets.csv"
    if not corpus.is_file():
        pytest.fail(f"The offline mirror at {mirror} lacks sentiment-tweets/tweets.csv.")
    seed_everything(0)
    dm = TextDataModule(str(corpus), classes=["negative", "positive"])
    assert dm.input_dim == 5000  # the corpus has far more terms than max_features
    assert [len(dm.split_rows(s)) for s in ("train", "val", "test")] == [16198, 2314, 4628]  # 70/10/20
    model = MLP(input_dim=dm.input_dim, num_classes=dm.num_classes)
    trainer = Trainer(
        max_epochs=2, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    trainer.fit(model, datamodule=dm)
    (result,) = trainer.test(model, datamodule=dm, verbose=False)

    # The reference: scikit-learn's logistic regression on the same split and the same TF-IDF vectors.
    train, test = dm.split_rows("train"), dm.split_rows("test")
    reference = LogisticRegression(max_iter=1000).fit(dm.vectorize(train.texts), train.labels)
    reference_acc = reference.score(dm.vectorize(test.texts), test.labels)
    assert 0.85 < reference_acc < 0.88  # majority class: 70 %
    assert result["test/acc"] >= reference_acc
