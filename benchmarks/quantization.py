"""Every quantization method side by side on the text MLP (5000-512-256-128-64-2) and MNIST logistic regression.

Random weights and inputs (TF-IDF-like sparse non-negative rows for the MLP), so accuracy is not
meaningful here: size, latency, speedup and agreement with fp32 are. The measurement is the one
the PostTrainingQuantization callback runs (``quantization.measure.rows.measure_methods``).

    python benchmarks/quantization.py [--num-threads 1] [--min-run-time-s 0.2] [--batch-sizes 1 256]
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from quantization import QuantizationData, default_methods
from quantization.measure.machine import describe, machine_info
from quantization.measure.rows import MeasureSettings, measure_methods
from quantization.ship.report import markdown_table


def text_mlp() -> nn.Sequential:
    """The text classifier's plain body: 5000 TF-IDF features -> 512 -> 256 -> 128 -> 64 -> 2 logits."""
    sizes = [5000, 512, 256, 128, 64]
    layers: list[nn.Module] = []
    for width_in, width_out in itertools.pairwise(sizes):
        layers += [nn.Linear(width_in, width_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Linear(sizes[-1], 2)).eval()


def sparse_rows(n: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Non-negative rows with ~1% non-zeros, like TF-IDF vectors of short texts, (n, width)."""
    mask = torch.rand(n, width, generator=generator) < 0.01
    return torch.rand(n, width, generator=generator) * mask


def benchmark(name: str, net: nn.Module, features: torch.Tensor, classes: int, settings: MeasureSettings) -> None:
    labels = torch.randint(0, classes, (len(features),), generator=torch.Generator().manual_seed(1))
    batches = [(features[i : i + 256], labels[i : i + 256]) for i in range(0, len(features), 256)]
    data = QuantizationData(example=features[:1], calibration=[features[i : i + 64] for i in range(0, 256, 64)])
    start = time.perf_counter()
    rows, _ = measure_methods(net, dict.fromkeys(default_methods()), batches, data, settings)
    seconds = time.perf_counter() - start
    print(f"\n## {name}: {len(rows)} methods measured in {seconds:.1f} s\n")
    print(markdown_table(rows))
    int8 = [row for row in rows if "int8" in row["method"]]
    fastest = max(int8, key=lambda row: row["speedup"]["1"]) if "1" in rows[0]["speedup"] else None
    print(f"smallest int8 size ratio (fp32/int8): {min(row['size_ratio'] for row in int8):.2f}x")
    if fastest is not None:
        print(f"fastest int8 at batch 1: {fastest['method']}, {fastest['speedup']['1']:.2f}x torch fp32 eager")


QUICK_S = 0.01  # --quick: timed seconds per method and batch size (every row still measured)


def run_both_models(description: str, bench: Callable[..., None]) -> None:
    """Parse the shared flags and run ``bench(name, net, features, classes, settings)`` on the text MLP and on
    the logistic regression (random weights; the same inputs in every benchmark script)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--num-threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--min-run-time-s", type=float, default=0.2, help="timed seconds per method and batch size")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256], help="latency batch sizes")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 0.01 s of timed calls per figure")
    args = parser.parse_args()
    settings = MeasureSettings(
        tuple(args.batch_sizes), args.num_threads, QUICK_S if args.quick else args.min_run_time_s
    )
    print(f"Measured on: {describe(machine_info())}")
    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    bench("Text MLP 5000-512-256-128-64-2", text_mlp(), sparse_rows(512, 5000, generator), 2, settings)
    bench(
        "Logistic regression 784-10",
        nn.Linear(784, 10).eval(),
        torch.randn(512, 784, generator=generator),
        10,
        settings,
    )


def main() -> None:
    run_both_models(__doc__.splitlines()[0], benchmark)


if __name__ == "__main__":
    main()
