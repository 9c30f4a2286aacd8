"""Seconds per training epoch on the tweets corpus: the seed's dense loop vs Quantlight's recipes.

    python benchmarks/text_epoch.py --corpus ../shared/data/sentiment-tweets/tweets.csv

(a) the seed's loop: dense float32 TF-IDF tensors, ``TensorDataset`` + ``DataLoader(shuffle=True)``
    (per-item indexing and collation) and a plain Adam loop, batch 64, over the 5000-512-256-128-64-2 MLP;
(b) ``cli.py fit -c configs/text_mlp_seed.yaml`` (the same recipe) as a user runs it: sparse batches served
    whole, the first layer reading only the weight columns a batch uses (``sparse_linear``), validation
    and checkpointing included;
(c) ``cli.py fit -c configs/text_mlp.yaml``, the recommended recipe (one hidden layer, batch 256, SGD),
    run to its configured end: seconds per epoch, total fit seconds and the seconds to its best checkpoint.
Same split and vectorizer in all three.
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

from benchmarks.timing import fit_run, print_epochs
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


def quantlight_run(config: str, corpus: str, classes: list[str], *overrides: str) -> tuple[list[float], int]:
    keep = f"[{','.join(classes)}]"
    return fit_run(config, "--data.init_args.path", corpus, "--data.init_args.classes", keep, *overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="../shared/data/sentiment-tweets/tweets.csv")
    parser.add_argument("--classes", default="negative,positive", help="labels to keep, comma-separated")
    parser.add_argument("--epochs", type=int, default=2, help="epochs of (a) and (b)")
    parser.add_argument("--quick", action="store_true", help="one epoch of each loop, the recipe's included")
    args = parser.parse_args()
    recipe_overrides = ["--trainer.max_epochs", "1"] if args.quick else []
    if args.quick:
        args.epochs = 1
    torch.manual_seed(0)

    classes, epochs = args.classes.split(","), args.epochs
    seed_recipe, _ = quantlight_run(
        "configs/text_mlp_seed.yaml", args.corpus, classes, "--trainer.max_epochs", str(epochs)
    )
    recipe, best = quantlight_run("configs/text_mlp.yaml", args.corpus, classes, *recipe_overrides)
    results = {
        "(a) seed-style dense loop, batch 64": seed_style_epochs(args.corpus, classes, 64, epochs),
        "(b) fit, the seed's recipe (text_mlp_seed)": seed_recipe,
        "(c) fit, the recommended recipe (text_mlp)": recipe,
    }
    title = f"Tweets {'/'.join(classes)}, torch threads {torch.get_num_threads()}"
    a, b, c = print_epochs(title, results)
    print(f"  seed recipe under Quantlight / seed-style: {b / a:.3f}")
    print(f"  recommended recipe / seed-style:           {c / a:.3f}  (target <= 0.333, moonshot <= 0.1)")
    to_best = sum(recipe[: best + 1])
    print(
        f"  recommended recipe: {len(recipe)} epochs in {sum(recipe):.1f} s; best checkpoint at epoch {best + 1}, "
        f"{to_best:.1f} s in (the seed-style loop takes {10 * a:.1f} s for its 10 epochs)"
    )


if __name__ == "__main__":
    main()
