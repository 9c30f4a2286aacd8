"""TextDataModule: splits, vectorizer equal to scikit-learn's, checkpoint state, batches, validation."""

from __future__ import annotations

import io
from collections import Counter

import numpy as np
import pytest
import torch
from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer

from datamodules.text import TextDataModule
from datamodules.text_vectorizer import vectorizer_from_state, vectorizer_json_state, vectorizer_state
from errors import CheckpointError, DataError
from modules import MLP
from runtime.features import TextFeaturizer
from tests.helpers import text_rows, write_text_corpus


def test_stratified_split_is_deterministic_and_seeded(tmp_path):
    path = write_text_corpus(tmp_path / "c.csv", n=100)
    first, again = TextDataModule(str(path)), TextDataModule(str(path))
    other_seed = TextDataModule(str(path), seed=1)
    sizes = {split: len(first.split_rows(split)) for split in ("train", "val", "test")}
    assert sizes == {"train": 70, "val": 10, "test": 20}  # val_size counts against the whole corpus
    for split in sizes:
        assert first.split_rows(split).lines == again.split_rows(split).lines
        assert Counter(first.split_rows(split).labels)["positive"] == sizes[split] // 2  # stratified
    assert first.split_rows("test").lines != other_seed.split_rows("test").lines
    every = sorted(line for split in sizes for line in first.split_rows(split).lines)
    assert every == list(range(2, 102))  # a partition of the file's rows


def test_row_counts_as_sizes(text_corpus):
    dm = TextDataModule(str(text_corpus), val_size=8, test_size=16)
    assert [len(dm.split_rows(s)) for s in ("train", "val", "test")] == [56, 8, 16]


@pytest.mark.parametrize("kind", ["tfidf", "count"])
def test_vectors_equal_scikit_learn_fitted_on_the_train_split(text_corpus, kind):
    dm = TextDataModule(str(text_corpus), vectorizer=kind, ngram_range=(1, 2), max_features=30)
    reference_class = TfidfVectorizer if kind == "tfidf" else CountVectorizer
    reference = reference_class(max_features=30, ngram_range=(1, 2)).fit(dm.split_rows("train").texts)
    for split in ("train", "test"):
        texts = dm.split_rows(split).texts
        ours, theirs = dm.vectorize(texts), reference.transform(texts)
        assert ours.shape == theirs.shape == (len(texts), 30)
        assert abs(ours - theirs).max() == 0
    assert dm.input_dim == 30


PUNCTUATION_TOKENS = r"(?u)\b\w+\b|[^\w\s]"  # the recipe's: words of any length and each punctuation mark


def test_token_pattern_gives_scikit_learn_vectors_and_the_bundle_reads_them(tmp_path):
    texts = ["I love it :) !!", "a b c ?", "bad, bad car...", "x y z", "so :( sad", "fine car.", "ok !", "no ? no"]
    path = tmp_path / "p.csv"
    path.write_text("text,label\n" + "".join(f'"{t}",{"pos" if i % 2 else "neg"}\n' for i, t in enumerate(texts * 5)))
    dm = TextDataModule(str(path), token_pattern=PUNCTUATION_TOKENS, val_size=8, test_size=8)
    reference = TfidfVectorizer(token_pattern=PUNCTUATION_TOKENS).fit(dm.split_rows("train").texts)
    assert {":", ")", "!", "?", "i", "a"} <= set(dm.vectorizer.vocabulary_) == set(reference.vocabulary_)
    ours, theirs = dm.vectorize(texts), reference.transform(texts)
    assert abs(ours - theirs).max() == 0
    bundle = TextFeaturizer.from_state(vectorizer_json_state(dm.vectorizer))(texts)  # what a bundle ships
    np.testing.assert_allclose(bundle, theirs.toarray(), rtol=1e-6)
    restored = TextDataModule(str(path))  # scikit-learn's default pattern, until the checkpoint's state wins
    restored.load_state_dict(dm.state_dict())
    assert abs(restored.vectorize(texts) - theirs).max() == 0


def test_the_training_split_is_served_as_its_transform_in_float32(text_corpus):
    dm = TextDataModule(str(text_corpus), ngram_range=(1, 2))
    dm.setup("fit")
    served = dm.dataset("train").features  # from fit_transform: one tokenizing pass
    expected = dm.vectorize(dm.split_rows("train").texts).astype(np.float32)
    assert served.dtype == np.float32 and (served != expected).nnz == 0


def test_a_version_1_vectorizer_state_still_loads(text_corpus):
    dm = TextDataModule(str(text_corpus))
    state = vectorizer_state(dm.vectorizer) | {"version": 1}  # the vocabulary as a str -> int dict
    del state["token_pattern"]  # version 1 had none: scikit-learn's default
    restored = vectorizer_from_state(state, "test")
    texts = dm.split_rows("test").texts
    assert abs(restored.transform(texts) - dm.vectorize(texts)).max() == 0


def test_input_dim_is_the_real_vocabulary_width(text_corpus):
    dm = TextDataModule(str(text_corpus))  # max_features 5000, but the corpus has 28 words
    assert dm.input_dim == len(dm.vectorizer.vocabulary_) == 28
    dm.setup("fit")
    x, _ = dm.train_dataloader().dataset.__getitems__([0, 1, 2])
    assert x.shape == (3, dm.input_dim)
    assert dm.num_classes == 2 and dm.classes == ["negative", "positive"]


def test_classes_keep_and_order_labels(tmp_path):
    rows = [*text_rows(60), *((f"meh {i}", "neutral") for i in range(30))]
    path = tmp_path / "three.csv"
    path.write_text("text,label\n" + "".join(f"{text},{label}\n" for text, label in rows))
    dm = TextDataModule(str(path), classes=["positive", "negative"])
    assert dm.classes == ["positive", "negative"] and dm.num_classes == 2
    assert sum(len(dm.split_rows(s)) for s in ("train", "val", "test")) == 60
    dm.setup("fit")
    _, y = dm.dataset("train").__getitems__(list(range(len(dm.split_rows("train")))))
    expected = [0 if label == "positive" else 1 for label in dm.split_rows("train").labels]
    assert y.tolist() == expected
    assert TextDataModule(str(path)).num_classes == 3  # without `classes`: every label, sorted


def test_separate_files_and_unknown_label_in_test_file(tmp_path):
    train = write_text_corpus(tmp_path / "train.csv", n=60)
    test = tmp_path / "test.tsv"
    test.write_text("text\tlabel\ngood car\tpositive\nbad car\tnegative\nsome car\tneutral\n")
    dm = TextDataModule(train_path=str(train), test_path=str(test), val_size=0.2)
    with pytest.raises(DataError, match=r"test.tsv:4: unknown label 'neutral' \(classes: negative, positive\)"):
        dm.setup("test")
    skipping = TextDataModule(train_path=str(train), test_path=str(test), val_size=0.2, on_bad_row="skip")
    with pytest.warns(UserWarning, match=r"Skipped 1 bad row\(s\): .*test.tsv:4: unknown label"):
        skipping.setup("test")
    assert [len(skipping.split_rows(s)) for s in ("train", "val", "test")] == [48, 12, 2]


def test_bad_training_row_stops_or_is_skipped(tmp_path):
    path = write_text_corpus(tmp_path / "c.csv", n=60)
    path.write_text(path.read_text() + " ,positive\n")
    with pytest.raises(DataError, match=r"Bad row at .*c.csv:62: empty text"):
        TextDataModule(str(path)).input_dim  # noqa: B018  (the CLI reads it at construction)
    with pytest.warns(UserWarning, match=r"Skipped 1 bad row"):
        assert TextDataModule(str(path), on_bad_row="skip").input_dim > 0


def test_state_round_trips_through_weights_only_checkpoint(text_corpus):
    dm = TextDataModule(str(text_corpus), ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    buffer = io.BytesIO()
    torch.save({"TextDataModule": dm.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)["TextDataModule"]  # no pickled scikit-learn objects
    restored = TextDataModule(str(text_corpus))  # other settings: the state decides
    restored.load_state_dict(state)
    texts = [*dm.split_rows("test").texts, "unseen words only", "good good car"]
    assert abs(restored.vectorize(texts) - dm.vectorize(texts)).max() == 0
    assert restored.classes == dm.classes and restored.input_dim == dm.input_dim
    assert restored.vectorizer.get_params()["ngram_range"] == (1, 2)


def test_restored_vectorizer_wins_over_a_changed_corpus(tmp_path):
    path = write_text_corpus(tmp_path / "c.csv", n=80)
    trained = TextDataModule(str(path))
    state = trained.state_dict()
    write_text_corpus(path, n=80, seed=7)  # the corpus changed after training
    resumed = TextDataModule(str(path))
    texts = resumed.split_rows("test").texts
    assert abs(resumed.vectorize(texts) - trained.vectorize(texts)).max() > 0
    resumed.load_state_dict(state)
    assert abs(resumed.vectorize(texts) - trained.vectorize(texts)).max() == 0


def test_checkpoint_mismatches_are_checkpoint_errors(text_corpus):
    state = TextDataModule(str(text_corpus)).state_dict()
    narrow = TextDataModule(str(text_corpus), max_features=10)
    assert narrow.input_dim == 10  # fitted, as under the CLI
    narrow.load_state_dict(state)  # the checkpoint's vectorizer wins; the model's check guards its width
    assert narrow.input_dim == 28
    with pytest.raises(CheckpointError, match=r"trained on classes \(negative, positive\), .*--data.init_args.classes"):
        TextDataModule(str(text_corpus), classes=["positive", "negative"]).load_state_dict(state)
    with pytest.raises(CheckpointError, match=r"no text vectorizer this version can read"):
        TextDataModule(str(text_corpus)).load_state_dict({"vectorizer": {"version": 99}})


def test_sparse_and_dense_batches_hold_the_same_values(text_corpus):
    sparse, dense = TextDataModule(str(text_corpus)), TextDataModule(str(text_corpus), sparse=False)
    for dm in (sparse, dense):
        dm.setup("fit")
    xs, ys = next(iter(sparse.train_dataloader()))
    xd, yd = next(iter(dense.train_dataloader()))
    assert xs.layout == torch.sparse_coo and xd.layout == torch.strided
    assert torch.equal(xs.to_dense(), xd) and torch.equal(ys, yd)
    assert xs.shape == (len(sparse.split_rows("train")), sparse.input_dim)  # 56 rows: one batch


def test_mlp_sparse_forward_and_gradients_match_dense(text_corpus):
    dm = TextDataModule(str(text_corpus))
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    model = MLP(input_dim=dm.input_dim, hidden_sizes=[16, 8], num_classes=2)
    grads = []
    for batch in (x, x.to_dense()):
        model.zero_grad()
        logits = model(batch)
        torch.nn.functional.cross_entropy(logits, y).backward()
        grads.append((logits.detach(), model.net[0].weight.grad.clone()))
    torch.testing.assert_close(grads[0][0], grads[1][0])
    torch.testing.assert_close(grads[0][1], grads[1][1])
    assert type(model.net[0]) is torch.nn.Linear  # quantizers match the exact type


def test_imdb_source(imdb_root):
    dm = TextDataModule(source="imdb", data_dir=str(imdb_root), download=False, val_size=4)
    assert [len(dm.split_rows(s)) for s in ("train", "val", "test")] == [20, 4, 24]  # official test split
    assert dm.classes == ["negative", "positive"]


def test_predict_without_path_and_without_corpus(tmp_path):
    with pytest.raises(DataError, match=r"`predict` needs texts .*--data.init_args.predict_path"):
        TextDataModule(str(write_text_corpus(tmp_path / "c.csv"))).setup("predict")
    with pytest.raises(DataError, match=r"No training corpus configured .*--data.init_args.path"):
        TextDataModule().input_dim  # noqa: B018


def test_tiny_corpus_cannot_be_stratified(tmp_path):
    path = write_text_corpus(tmp_path / "c.csv", n=6)
    with pytest.raises(DataError, match=r"Cannot split 4 rows of .*c.csv into stratified parts of size 0.125"):
        TextDataModule(str(path)).input_dim  # noqa: B018


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"vectorizer": "bow"}, r"`vectorizer` to be one of \(tfidf, count\), got 'bow'"),
        ({"source": "web"}, r"`source` to be one of \(files, imdb\)"),
        ({"on_bad_row": "ignore"}, r"`on_bad_row` to be one of \(error, skip\)"),
        ({"val_size": 1.5}, r"`val_size` to be a fraction in \(0, 1\) or a row count >= 1, got 1.5"),
        ({"val_size": 0}, r"`val_size` to be a fraction"),
        ({"test_size": -0.1}, r"`test_size` to be a fraction"),
        ({"val_size": 0.5, "test_size": 0.5}, r"`val_size` \+ `test_size` < 1"),
        ({"max_features": 0}, r"`max_features` >= 1 or None"),
        ({"ngram_range": (2, 1)}, r"`ngram_range` to be \(min_n, max_n\)"),
        ({"min_df": 0}, r"`min_df` to be a count >= 1 or a fraction"),
        ({"vectorizer": "count", "sublinear_tf": True}, r"`sublinear_tf` false with `vectorizer` 'count'"),
        ({"token_pattern": "(\\w"}, r"`token_pattern` a regular expression, got '\(\\\\w'"),
        ({"token_pattern": r"(\w)(\w)"}, r"`token_pattern` with at most one capturing group"),
        ({"classes": ["a"]}, r"`classes` to list at least two distinct labels"),
        ({"train_path": "t.csv"}, r"one of `path` .* and `train_path` .*, got both"),
        ({"source": "imdb"}, r"no `path`/`train_path`/`val_path`/`test_path` with `source` 'imdb'"),
        ({"batch_size": 0}, r"`batch_size` >= 1"),
        ({"num_workers": -1}, r"`num_workers` >= 0"),
    ],
    ids=["vectorizer", "source", "on_bad_row", "val_size-big", "val_size-zero", "test_size", "sizes-sum",
         "max_features", "ngram_range", "min_df", "sublinear-count", "token_pattern", "token_pattern-groups",
         "classes", "path-and-train_path",
         "imdb-with-path", "batch_size", "num_workers"],
)  # fmt: skip
def test_argument_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TextDataModule(path="c.csv", **kwargs)


def test_mlp_validation():
    with pytest.raises(ValueError, match=r"`hidden_sizes` to be a non-empty list"):
        MLP(input_dim=4, hidden_sizes=[])
    with pytest.raises(ValueError, match=r"`dropout` in \[0, 1\)"):
        MLP(input_dim=4, dropout=1.0)
    with pytest.raises(ValueError, match=r"`input_dim` >= 1"):
        MLP(input_dim=0)
    dropout = MLP(input_dim=4, hidden_sizes=[3], dropout=0.2).net
    assert [type(m).__name__ for m in dropout] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert np.isclose(dropout[2].p, 0.2)
