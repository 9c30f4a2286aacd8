"""Seconds per training epoch on the tweets corpus: the seed's dense loop, Quantlight's recipes, and fastText.

    python benchmarks/text_epoch.py                 # the tweets, negative vs positive, from the data mirror
    python benchmarks/text_epoch.py --quick         # the same table on 3,000 tweets and 1-2 epochs, in a minute

(a) the seed's loop: dense float32 TF-IDF tensors (5,000 terms), ``TensorDataset`` + ``DataLoader(shuffle=True)``
    (per-item indexing and collation) and a plain Adam loop, batch 64, over the 5000-512-256-128-64-2 MLP;
(b) ``cli.py fit -c configs/text_mlp_seed.yaml`` (the same recipe) as a user runs it: sparse batches served whole,
    a dense first-layer gradient, validation and checkpointing included;
(c) ``cli.py fit -c configs/text_mlp.yaml``, the recommended recipe, run to its configured end: seconds per epoch,
    and the seconds from the start (reading the corpus and fitting the vectorizer included) to its best checkpoint;
(d) fastText supervised (5 epochs, unigrams: its defaults) on (c)'s training split: its training seconds.
The same split in all four. Wall seconds, and the process's CPU seconds per epoch beside them (steadier when other
jobs share the cores). Torch and fastText run on ``--threads`` threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import fasttext_baseline
from benchmarks.corpora import MIRROR, sample_rows
from benchmarks.timing import FitTiming, fit_run, print_epochs
from datamodules.text import TextDataModule
from modules.mlp import mlp_body

ROOT = Path(__file__).resolve().parents[1]


def seed_style_epochs(corpus: str, classes: list[str], batch_size: int, epochs: int) -> list[float]:
    dm = TextDataModule(corpus, classes=classes)
    train = dm.split_rows("train")
    x = torch.from_numpy(dm.vectorize(train.texts).toarray()).float()  # (N, 5000) dense, as the seed held it
    y = torch.tensor([dm.classes.index(label) for label in train.labels])
    loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True)
    model = mlp_body(dm.input_dim, [512, 256, 128, 64], dm.num_classes, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for xb, yb in loader:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def quantlight_run(config: str, corpus: str, classes: list[str], *overrides: str) -> FitTiming:
    keep = f"[{','.join(classes)}]"
    progress = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")
    return fit_run(config, "--data.init_args.path", corpus, "--data.init_args.classes", keep, *progress, *overrides)


def fasttext_seconds(datamodule, epochs: int, threads: int) -> fasttext_baseline.FastTextRun | str:
    """fastText's training seconds with its default settings on the datamodule's split, or why there are none."""
    if not fasttext_baseline.AVAILABLE:
        return f"not installed ({fasttext_baseline.INSTALL})"
    splits = fasttext_baseline.tokenized_splits(datamodule)
    (run,) = fasttext_baseline.train_and_score(splits, [fasttext_baseline.FastTextSetting(epochs=epochs)], threads, 0)
    return run or f"every one of {fasttext_baseline.ATTEMPTS} attempts stopped with 'Encountered NaN'"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(MIRROR / "sentiment-tweets" / "tweets.csv"))
    parser.add_argument("--classes", default="negative,positive", help="labels to keep, comma-separated")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of (a) and (b)")
    parser.add_argument("--threads", type=int, default=1, help="torch and fastText threads")
    parser.add_argument("--quick", action="store_true", help="3,000 texts, 1-2 epochs: the same table in a minute")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    os.chdir(ROOT)  # configs name repository-relative paths

    classes, epochs = args.classes.split(","), 1 if args.quick else args.epochs
    with tempfile.TemporaryDirectory() as folder:
        corpus = sample_rows(args.corpus, classes, 3000, Path(folder) / "corpus.csv") if args.quick else args.corpus
        quick = ("--trainer.max_epochs", "2") if args.quick else ()
        seed_recipe = quantlight_run("configs/text_mlp_seed.yaml", corpus, classes, "--trainer.max_epochs", str(epochs))
        recipe = quantlight_run("configs/text_mlp.yaml", corpus, classes, *quick)
        fasttext = fasttext_seconds(recipe.datamodule, 1 if args.quick else 5, args.threads)
        results = {
            "(a) seed-style dense loop, batch 64": seed_style_epochs(corpus, classes, 64, epochs),
            "(b) fit, the seed's recipe (text_mlp_seed)": seed_recipe.epochs,
            "(c) fit, the recommended recipe (text_mlp)": recipe.epochs,
        }
    title = f"Tweets {'/'.join(classes)}{' (--quick)' if args.quick else ''}, threads {args.threads}"
    a, b, c = print_epochs(title, results)
    cpu_b, cpu_c = (statistics.median(run.cpu_epochs) for run in (seed_recipe, recipe))
    print(f"  CPU seconds per epoch: (b) {cpu_b:.3f}, (c) {cpu_c:.3f}")
    print(f"  seed recipe under Quantlight / seed-style: {b / a:.3f}")
    print(f"  recommended recipe / seed-style:           {c / a:.3f}  (target <= 0.1, moonshot <= 0.033)")
    print(
        f"  recommended recipe: {len(recipe.epochs)} epochs, best checkpoint at epoch {recipe.best_epoch + 1}, "
        f"{recipe.to_best_s:.1f} s from the start (corpus read, vectorizer fitted) to it; fit {recipe.fit_s:.1f} s"
    )
    if isinstance(fasttext, str):
        print(f"  (d) fastText: {fasttext}")
        return
    print(
        f"  (d) fastText, {fasttext.setting.name}, {args.threads} thread(s): trains in {fasttext.train_s:.2f} s "
        f"(val {fasttext.val_acc:.2f} %, test {fasttext.test_acc:.2f} %)"
    )
    print(
        f"  recommended recipe's start to best checkpoint / fastText's training: "
        f"{recipe.to_best_s / fasttext.train_s:.1f}x  (target <= 5, moonshot <= 2)"
    )
    passed = recipe.seconds_to_val_acc(fasttext.val_acc / 100)
    if passed:
        print(
            f"  the recipe passes fastText's validation accuracy after epoch {passed[0]}, {passed[1]:.1f} s from the "
            f"start: {passed[1] / fasttext.train_s:.1f}x fastText's training"
        )


if __name__ == "__main__":
    main()
