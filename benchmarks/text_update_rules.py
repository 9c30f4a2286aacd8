"""The first layer's update rule, measured: test accuracy and milliseconds a step of the rules a sparse layer can use.

    python benchmarks/text_update_rules.py            # 3 settings x 3 seeds, ~15 min on 2 busy cores
    python benchmarks/text_update_rules.py --quick    # 1,500 tweets, 1 seed, 2 epochs: the same table
    python benchmarks/text_update_rules.py --rules "sparse SGD" --hidden 256 --seeds 6    # the recipe, wider
    python benchmarks/text_update_rules.py --rules "sparse SGD" --epochs 8 --texts 3600 --reference   # a small corpus

The recommended recipe's network, data and schedule (``configs/text_mlp.yaml``: TF-IDF of words and punctuation,
128 hidden units, dropout 0.5, batch 256, cosine over 12 epochs, the best validation epoch tested), trained by a
plain PyTorch loop whose only difference between rows is how the first layer's weight (one row per term) learns:

- ``sparse SGD``: the recipe's rule: plain SGD at 32 on the rows the batch uses (the same update a dense SGD step
  makes), SGD 0.4 + momentum 0.9 for the rest;
- ``lazy momentum``: each used row's momentum buffer (0.9) updated and applied when the row is used, at 3.2
  (= 32 x (1 - 0.9)); a second table as large as the weight;
- ``Adagrad``: ``torch.optim.Adagrad`` (lr 0.1) for every parameter: sparse rows, exact;
- ``SparseAdam``: ``torch.optim.SparseAdam`` (lr 0.01) on the rows (lazy Adam), Adam 1e-3 for the rest;
- ``dense momentum``: the previous recipe's rule, SGD 0.4 + momentum 0.9 on every weight, a dense gradient.

Milliseconds a step: forward, backward and update, median over the run's steps (1 thread), the data loading left out.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.corpora import MIRROR, SETTINGS, sample_rows
from datamodules.text import TextDataModule
from datamodules.text_baseline import tuned_logistic_regression
from modules.term_rows import term_sum

RULES = ("sparse SGD", "lazy momentum", "Adagrad", "SparseAdam", "dense momentum")
REFERENCE = "C-tuned LogisticRegression (reference)"
TOKENS, DROPOUT, BATCH = r"(?u)\b\w+\b|[^\w\s]", 0.5, 256


class Rule:
    """The network ``rows (D, H) -> ReLU -> dropout -> head`` and one rule's optimizers; ``step`` trains a batch."""

    def __init__(self, rule: str, input_dim: int, num_classes: int, hidden: int, seed: int) -> None:
        torch.manual_seed(seed)
        first, self.head = torch.nn.Linear(input_dim, hidden), torch.nn.Linear(hidden, num_classes)
        self.rows = first.weight.detach().t().contiguous().requires_grad_()  # (D, H), the layer's values
        self.bias, self.rule = first.bias, rule
        dense = [self.bias, *self.head.parameters()]
        self.sparse = rule != "dense momentum"
        self.extra = None
        if rule == "sparse SGD":
            groups = [{"params": [self.rows], "lr": 32.0, "momentum": 0.0}, {"params": dense}]
            self.optimizers = [torch.optim.SGD(groups, lr=0.4, momentum=0.9)]
        elif rule == "lazy momentum":
            self.optimizers = [torch.optim.SGD(dense, lr=0.4, momentum=0.9)]
            self.extra = torch.zeros_like(self.rows)  # (D, H) momentum buffers
        elif rule == "Adagrad":
            self.optimizers = [torch.optim.Adagrad([self.rows, *dense], lr=0.1)]
        elif rule == "SparseAdam":
            self.optimizers = [torch.optim.SparseAdam([self.rows], lr=0.01), torch.optim.Adam(dense, lr=1e-3)]
        else:
            self.optimizers = [torch.optim.SGD([self.rows, *dense], lr=0.4, momentum=0.9)]
        self.base = [[group["lr"] for group in opt.param_groups] for opt in self.optimizers]

    def anneal(self, fraction: float) -> None:
        """Cosine schedule: every learning rate at ``fraction`` of the run."""
        scale = 0.5 * (1 + math.cos(math.pi * fraction))
        for opt, base in zip(self.optimizers, self.base, strict=True):
            for group, lr in zip(opt.param_groups, base, strict=True):
                group["lr"] = lr * scale
        self.scale = scale

    def logits(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        h = F.relu(term_sum(self.rows, x, sparse=self.sparse and train) + self.bias)  # (B, H)
        return self.head(F.dropout(h, DROPOUT, training=train))

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        for opt in self.optimizers:
            opt.zero_grad()
        self.rows.grad = None
        F.cross_entropy(self.logits(x, True), y).backward()
        for opt in self.optimizers:
            opt.step()
        if self.extra is not None:  # lazy momentum: only the used rows' buffers decay and apply
            grad = self.rows.grad.coalesce()
            used = grad.indices()[0]
            buffers = self.extra.index_select(0, used).mul_(0.9).add_(grad.values())
            self.extra.index_copy_(0, used, buffers)
            with torch.no_grad():
                self.rows.index_add_(0, used, buffers, alpha=-3.2 * self.scale)


def run(rule: str, dm: TextDataModule, args: argparse.Namespace, seed: int) -> tuple[float, list[float]]:
    """``(test accuracy % at the best validation epoch, ms per step)`` of one rule on one split."""
    epochs = args.epochs
    model = Rule(rule, dm.input_dim, dm.num_classes, args.hidden, seed)
    train, val, test = (dm.dataset(split) for split in ("train", "val", "test"))
    evaluation = {name: ds.__getitems__(list(range(len(ds)))) for name, ds in (("val", val), ("test", test))}
    generator = np.random.default_rng(seed)
    best, times = (-1.0, 0.0), []
    for epoch in range(epochs):
        model.anneal(epoch / epochs)
        order = generator.permutation(len(train))
        for start in range(0, len(order), BATCH):
            x, y = train.__getitems__(order[start : start + BATCH].tolist())
            begin = time.perf_counter()
            model.step(x, y)
            times.append(1e3 * (time.perf_counter() - begin))
        with torch.no_grad():
            acc = {
                k: 100 * (model.logits(x, False).argmax(1) == y).float().mean().item()
                for k, (x, y) in evaluation.items()
            }
        if acc["val"] > best[0]:
            best = (acc["val"], acc["test"])
    return best[1], times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--rules", nargs="+", choices=RULES, default=list(RULES))
    parser.add_argument("--hidden", type=int, default=128, help="hidden units")
    parser.add_argument("--texts", type=int, help="a small corpus: every k-th text of each, this many in all")
    parser.add_argument("--reference", action="store_true", help="add the C-tuned LogisticRegression's row")
    parser.add_argument("--quick", action="store_true", help="1,500 tweets, 1 seed, 2 epochs")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.quick:
        args.settings, args.seeds, args.epochs = ["tweets-2"], 1, 2
    results = {rule: {} for rule in [*args.rules, *([REFERENCE] if args.reference else [])]}
    with tempfile.TemporaryDirectory() as folder:
        for name in args.settings:
            corpus, classes = str(MIRROR / SETTINGS[name][0]), SETTINGS[name][1]
            if args.quick or args.texts:
                corpus = sample_rows(corpus, classes, args.texts or 1500, Path(folder) / "corpus.csv")
            for seed in range(args.seeds):
                dm = TextDataModule(corpus, classes=classes, seed=seed, max_features=100_000, token_pattern=TOKENS)
                for rule in args.rules:
                    acc, times = run(rule, dm, args, seed)
                    accs, steps = results[rule].setdefault(name, ([], []))
                    accs.append(acc)
                    steps.extend(times)
                if args.reference:
                    accs, _ = results[REFERENCE].setdefault(name, ([], [float("nan")]))
                    accs.append(100 * tuned_logistic_regression(dm)[0])
                print(f"  ... {name} seed {seed}", flush=True)
    sample = f", {args.texts} texts a corpus" if args.texts else ""
    print(f"\nFirst-layer update rules, {args.hidden} hidden units, {args.epochs} epochs{sample}: "
          f"test accuracy (mean of {args.seeds} seed(s)) and ms a step (median)")  # fmt: skip
    print(f"| rule | {' | '.join(args.settings)} | {' | '.join(f'ms/step {n}' for n in args.settings)} |")
    print(f"|---|{'---|' * 2 * len(args.settings)}")
    for rule in results:
        accs = " | ".join(f"{statistics.mean(results[rule][n][0]):.2f} %" for n in args.settings)
        steps = " | ".join(f"{statistics.median(results[rule][n][1]):.2f}" for n in args.settings)
        print(f"| {rule} | {accs} | {steps} |")


if __name__ == "__main__":
    main()
