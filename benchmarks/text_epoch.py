"""Seconds per training epoch on the tweets corpus: the seed's dense loop vs Quantlight's fit.

    python benchmarks/text_epoch.py --corpus ../shared/data/sentiment-tweets/tweets.csv

(a) the seed's loop: dense float32 TF-IDF tensors, ``TensorDataset`` + ``DataLoader(shuffle=True)``
    (per-item indexing and collation) and a plain Adam loop over the same 5000-512-256-128-64-2 MLP;
(b) ``python cli.py fit -c configs/text_mlp.yaml`` as a user runs it: sparse batches served whole,
    the first layer reading only the weight columns a batch uses (``sparse_linear``), validation and
    checkpointing included;
(c) the same fit with every batch densified (``--data.init_args.sparse false``), to show what
    serving sparse batches buys. Same split, vectorizer, batch size and learning rate.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import fit_epochs, print_epochs
from datamodules.text import TextDataModule
from modules.mlp import mlp_body


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


def quantlight_epochs(corpus: str, classes: list[str], batch_size: int, epochs: int, sparse: bool) -> list[float]:
    return fit_epochs(
        "configs/text_mlp.yaml", "--data.init_args.path", corpus, "--data.init_args.classes", f"[{','.join(classes)}]",
        "--data.init_args.sparse", str(sparse).lower(), "--data.init_args.batch_size", str(batch_size),
        "--trainer.max_epochs", str(epochs),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/data/sentiment-tweets/tweets.csv")
    parser.add_argument("--classes", default="negative,positive", help="labels to keep, comma-separated")
    parser.add_argument("--batch-size", type=int, default=64, help="the seed's and the config's batch size")
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args()
    torch.manual_seed(0)

    classes, bs, epochs = args.classes.split(","), args.batch_size, args.epochs
    results = {
        "(a) seed-style dense loop": seed_style_epochs(args.corpus, classes, bs, epochs),
        "(b) Quantlight fit, sparse (val + ckpt)": quantlight_epochs(args.corpus, classes, bs, epochs, sparse=True),
        "(c) Quantlight fit, densified batches": quantlight_epochs(args.corpus, classes, bs, epochs, sparse=False),
    }
    title = f"Tweets MLP 5000-512-256-128-64-2, batch {bs}, torch threads {torch.get_num_threads()}"
    a, b, c = print_epochs(title, results)
    print(f"  Quantlight sparse / seed-style: {b / a:.3f}  (target <= 0.333)")
    print(f"  Quantlight sparse / densified:  {b / c:.3f}")


if __name__ == "__main__":
    main()
