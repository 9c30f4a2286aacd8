"""Seconds per training epoch on MNIST: seed-style loop vs in-memory loop vs Quantlight's fit.

    python benchmarks/mnist_epoch.py [--data-dir data] [--quick]

(a) plain PyTorch with torchvision per-item ``ToTensor + Normalize`` (how the seed trained),
(b) plain PyTorch over in-memory tensors (``randperm`` + index: the floor for this model),
(c) ``python cli.py fit -c configs/mnist_logistic.yaml`` as a user runs it (validation and
checkpointing included), timed per epoch by a callback. Same batch size and optimizer.
"""

from __future__ import annotations

import argparse
import sys
import time
from itertools import islice
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.timing import fit_epochs, print_epochs
from datamodules.mnist import MNIST_MEAN, MNIST_STD, load_mnist_split


def seed_style_epochs(data_dir: str, batch_size: int, epochs: int, limit: int | None = None) -> list[float]:
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MNIST_MEAN,), (MNIST_STD,))])
    loader = DataLoader(datasets.MNIST(data_dir, train=True, transform=tf), batch_size=batch_size, shuffle=True)
    return _plain_epochs(islice(((x.view(len(x), -1), y) for x, y in loader), limit) for _ in range(epochs))


def in_memory_epochs(data_dir: str, batch_size: int, epochs: int, limit: int | None = None) -> list[float]:
    x, y = load_mnist_split(Path(data_dir) / "MNIST" / "raw", "train")

    def batches():
        order = torch.randperm(len(y))
        for i in range(0, len(y), batch_size):
            idx = order[i : i + batch_size]
            yield x[idx], y[idx]

    return _plain_epochs(islice(batches(), limit) for _ in range(epochs))


def _plain_epochs(epoch_iterables) -> list[float]:
    model = nn.Linear(784, 10)
    opt = torch.optim.AdamW(model.parameters(), lr=0.004, weight_decay=1e-4)  # as configs/mnist_logistic.yaml
    times = []
    for batches in epoch_iterables:
        start = time.perf_counter()
        for xb, yb in batches:
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times


def quantlight_epochs(data_dir: str, batch_size: int, epochs: int, limit: int | None = None) -> list[float]:
    return fit_epochs(
        "configs/mnist_logistic.yaml", "--data.data_dir", data_dir, "--data.batch_size", str(batch_size),
        "--trainer.max_epochs", str(epochs), *(["--trainer.limit_train_batches", str(limit)] if limit else []),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="data", help="torchvision root holding MNIST/raw/*-ubyte")
    parser.add_argument("--batch-size", type=int, default=1024, help="the config's batch size")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--seed-epochs", type=int, default=1, help="epochs of the slow seed-style loop")
    parser.add_argument("--quick", action="store_true", help="1 epoch of each loop, the first 5 batches of it")
    args = parser.parse_args()
    limit = 5 if args.quick else None
    if args.quick:
        args.epochs = args.seed_epochs = 1
    torch.manual_seed(0)

    data, bs, epochs = args.data_dir, args.batch_size, args.epochs
    results = {
        "(a) seed-style, per-item transforms": seed_style_epochs(data, bs, args.seed_epochs, limit),
        "(b) plain loop, in-memory tensors": in_memory_epochs(data, bs, epochs, limit),
        "(c) Quantlight fit (val + ckpt incl.)": quantlight_epochs(data, bs, epochs, limit),
    }
    # The first Quantlight epoch also builds loaders and warms up; report the median epoch for all.
    title = f"MNIST logistic regression, batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    a, b, c = print_epochs(title, results)
    if args.quick:
        print("  (--quick: 5 batches of one epoch each, warm-up included: the ratios are not the benchmark's figures)")
    print(f"  Quantlight / seed-style: {c / a:.3f}  (target <= 0.100)")
    print(f"  Quantlight / in-memory:  {c / b:.2f}   (target <= 2.00)")


if __name__ == "__main__":
    main()
