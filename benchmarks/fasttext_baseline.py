"""fastText supervised on a text datamodule's split: the reference the text recipe is held against (benchmarks only).

fastText (PyPI wheel ``fasttext-numpy2-wheel==0.9.2``, a benchmark-only dependency) splits on whitespace; it is given
each text lower-cased and cut into the recipe vectorizer's own tokens (its ``token_pattern``: words and punctuation
marks), joined by spaces, which lifts it 0.5-2.5 points over raw text on the three corpora here. Its bigrams
(``wordNgrams: 2``) are its own, hashed. ``text_accuracy.py`` and ``text_epoch.py`` use it; run alone it trains
nothing.

fastText trains in a fresh process: in a process that has run scikit-learn's ``LogisticRegression``, every attempt
of this wheel stopped with "Encountered NaN" (3 of 3 attempts before it, 0 of 3 after, same data); in a fresh
process it still does so now and then (one thread and a fixed seed included), so each setting gets up to
``ATTEMPTS`` attempts.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

INSTALL = "pip install fasttext-numpy2-wheel==0.9.2"
AVAILABLE = importlib.util.find_spec("fasttext") is not None
ATTEMPTS = 10


@dataclass(frozen=True)
class FastTextSetting:
    """One fastText supervised training setting (its defaults but ``word_ngrams``, ``epochs`` and ``lr``)."""

    word_ngrams: int = 1
    epochs: int = 5
    lr: float = 0.1

    @property
    def name(self) -> str:
        return f"{'bigrams' if self.word_ngrams == 2 else 'unigrams'}, {self.epochs} epochs, lr {self.lr:g}"


# fastText's defaults (5 epochs, lr 0.1) and the longer, faster schedules its tutorial recommends, each with and
# without bigrams: on the tweets and the Debian corpus the best of them is a bigram setting.
GRID = tuple(FastTextSetting(n, e, lr) for n in (1, 2) for e, lr in ((5, 0.1), (25, 0.1), (25, 0.5)))


@dataclass
class FastTextRun:
    setting: FastTextSetting
    train_s: float  # seconds of train_supervised
    val_acc: float  # %
    test_acc: float  # %
    retries: int  # attempts that stopped with "Encountered NaN" before this one


def tokenized_splits(dm) -> dict[str, tuple[list[str], list[int]]]:
    """``split -> (texts as the vectorizer's tokens joined by spaces, class indices)`` for train, val and test."""
    preprocess, tokenize = dm.vectorizer.build_preprocessor(), dm.vectorizer.build_tokenizer()
    index = {name: i for i, name in enumerate(dm.classes)}  # labels as indices: a label may hold spaces
    out = {}
    for split in ("train", "val", "test"):
        rows = dm.split_rows(split)
        out[split] = ([" ".join(tokenize(preprocess(text))) for text in rows.texts], [index[y] for y in rows.labels])
    return out


def train_and_score(splits: dict, settings: list[FastTextSetting], threads: int, seed: int) -> list[FastTextRun | None]:
    """Each setting trained on ``splits["train"]`` in one fresh process: its training seconds and accuracies, or
    ``None`` where every attempt stopped with "Encountered NaN"."""
    with tempfile.TemporaryDirectory() as folder:
        for split, (texts, labels) in splits.items():
            lines = (f"__label__{label} {text}\n" for text, label in zip(texts, labels, strict=True))
            Path(folder, f"{split}.txt").write_text("".join(lines), encoding="utf-8", newline="")
        command = [sys.executable, __file__, "--worker", folder, "--threads", str(threads), "--seed", str(seed)]
        command += ["--settings", json.dumps([asdict(s) for s in settings])]
        proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"fastText failed:\n{proc.stderr[-2000:]}")
    runs = [json.loads(line) for line in proc.stdout.splitlines()]
    return [FastTextRun(FastTextSetting(**run.pop("setting")), **run) if run else None for run in runs]


def _worker(folder: Path, settings: list[FastTextSetting], threads: int, seed: int) -> None:
    import fasttext

    def read(split: str) -> tuple[list[str], list[str]]:
        with (folder / f"{split}.txt").open(encoding="utf-8", newline="") as file:  # a "\r" in a text stays one
            lines = file.read().split("\n")[:-1]
        labels, texts = zip(*(line.split(" ", 1) for line in lines), strict=True)
        return list(texts), list(labels)

    evaluation = {split: read(split) for split in ("val", "test")}
    for setting in settings:
        kwargs = {"wordNgrams": setting.word_ngrams, "epoch": setting.epochs, "lr": setting.lr, "verbose": 0}
        run = None
        for attempt in range(ATTEMPTS):
            start = time.perf_counter()
            try:
                model = fasttext.train_supervised(str(folder / "train.txt"), thread=threads, seed=seed, **kwargs)
            except RuntimeError:  # "Encountered NaN."
                continue
            train_s = time.perf_counter() - start
            accuracies = [accuracy(model, *evaluation[split]) for split in ("val", "test")]
            run = {"setting": asdict(setting), "train_s": train_s, "val_acc": accuracies[0],
                   "test_acc": accuracies[1], "retries": attempt}  # fmt: skip
            break
        print(json.dumps(run), flush=True)


def accuracy(model, texts: list[str], labels: list[str]) -> float:
    """Accuracy in %: the share of texts whose top fastText label is theirs."""
    predicted = model.predict(texts)[0]
    return 100 * sum(top[0] == label for top, label in zip(predicted, labels, strict=True)) / len(labels)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", type=Path, help="folder holding train/val/test.txt in fastText's format")
    parser.add_argument("--settings", default="[]")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="(make bench) nothing to run")
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, [FastTextSetting(**s) for s in json.loads(args.settings)], args.threads, args.seed)
