"""The 2-8 bit weight-only family side by side: MNIST accuracy and artifact size per width and group size,
and latency on the text MLP against fp32.

Accuracy is that of a trained MNIST logistic regression (``--ckpt``, a Lightning checkpoint of
``LogisticRegression``: ``net.weight``, ``net.bias``) on the official 10k test images, from each
artifact loaded back as a user loads it. Sizes are the saved artifacts' bytes, for that model and
for the text MLP 5000-512-256-128-64-2 (random weights). Latency: ``quantization.measure.rows`` on the
text MLP with the registered methods' default settings (random weights and inputs: only size,
latency and agreement with fp32 mean anything there).

    python benchmarks/intn_weight.py --ckpt runs/mnist_logistic/version_1/checkpoints/best.ckpt \\
        [--data-dir data] [--num-threads 1] [--min-run-time-s 0.2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.quantization import sparse_rows, text_mlp
from benchmarks.timing import fit_checkpoint
from datamodules import MNISTDataModule
from quantization import METHODS, Artifact, QuantizationData, Runner, quantize
from quantization.artifacts.torch_artifact import TorchRunner
from quantization.measure.rows import MeasureSettings, measure_methods
from quantization.ship.report import markdown_table

BITS = range(2, 9)
GROUPS = (None, 16, 32, 128)
INTN = [name for name in METHODS if name.startswith("int") and name.endswith("_weight_only")]


def load_logistic(ckpt: Path) -> nn.Linear:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    weight, bias = state["net.weight"], state["net.bias"]  # (10, 784), (10,)
    layer = nn.Linear(weight.shape[1], weight.shape[0])
    with torch.no_grad():
        layer.weight.copy_(weight)
        layer.bias.copy_(bias)
    return layer.eval()


def accuracy(runner: Runner, images: torch.Tensor, labels: torch.Tensor) -> float:
    logits = runner.logits(images)  # (10000, 784) -> (10000, 10)
    return float((logits.argmax(dim=1) == labels).float().mean()) * 100


def intn_artifact(model: nn.Module, bits: int, group_size: int | None, example: torch.Tensor) -> Artifact:
    """``intn_weight_only`` at ``bits`` and ``group_size``, the other settings its defaults (absmax scales)."""
    return quantize(model, "intn_weight_only", QuantizationData(example), {"bits": bits, "group_size": group_size})


def sweep(layer: nn.Linear, mlp: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> None:
    example = QuantizationData(images[:1])
    fp32_bytes = quantize(layer, "fp32", example).size_bytes
    mlp_fp32_bytes = quantize(mlp, "fp32", QuantizationData(torch.zeros(1, 5000))).size_bytes
    fp32_acc = accuracy(TorchRunner(layer), images, labels)
    print(f"\n## MNIST logistic regression 784->10, trained: fp32 {fp32_acc:.2f} %, {fp32_bytes / 1024:.1f} KB\n")
    print("accuracy % (fp32/size of the artifact) per width and group size; text MLP fp32/size in the last columns\n")
    names = ["per channel" if g is None else f"group {g}" for g in GROUPS]
    print("| bits | " + " | ".join(f"MNIST {n}" for n in names) + " | " + " | ".join(f"MLP {n}" for n in names) + " |")
    print("|" + "---|" * (1 + 2 * len(GROUPS)))
    for bits in BITS:
        cells, mlp_cells = [], []
        for group_size in GROUPS:
            artifact = intn_artifact(layer, bits, group_size, images[:1])
            loaded = METHODS["intn_weight_only"].load(artifact.data, layer, 1)
            cells.append(f"{accuracy(loaded, images, labels):.2f} ({fp32_bytes / artifact.size_bytes:.2f}x)")
            mlp_size = intn_artifact(mlp, bits, group_size, torch.zeros(1, 5000)).size_bytes
            mlp_cells.append(f"{mlp_fp32_bytes / mlp_size:.2f}x")
        print(f"| {bits} | " + " | ".join(cells) + " | " + " | ".join(mlp_cells) + " |")
    chosen = ", ".join(f"{name}: group_size={METHODS[name].settings().group_size}" for name in INTN)
    print(f"\nRegistered defaults: {chosen}. MLP fp32: {mlp_fp32_bytes / 1e6:.2f} MB.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ckpt", type=Path, help="a trained LogisticRegression checkpoint (default: trained now with the MNIST config)"
    )
    parser.add_argument("--data-dir", default="data", help="torchvision root holding MNIST/raw/*-ubyte")
    parser.add_argument("--num-threads", type=int, default=1, help="torch intra-op threads while timing")
    parser.add_argument("--min-run-time-s", type=float, default=0.2, help="timed seconds per method and batch size")
    parser.add_argument("--quick", action="store_true", help="1 training epoch and 0.01 s of timed calls per figure")
    args = parser.parse_args()
    if args.quick:
        args.min_run_time_s = 0.01
    if args.ckpt is None:
        epochs = ["--trainer.max_epochs", "1"] if args.quick else []
        folder = tempfile.TemporaryDirectory()
        args.ckpt = fit_checkpoint(
            "configs/mnist_logistic.yaml", folder.name, "--data.data_dir", args.data_dir, *epochs
        )
    torch.set_num_threads(args.num_threads)

    datamodule = MNISTDataModule(args.data_dir, download=False, batch_size=1024)
    datamodule.prepare_data()
    datamodule.setup("test")
    test = list(datamodule.test_dataloader())
    images, labels = torch.cat([x for x, _ in test]), torch.cat([y for _, y in test])  # (10000, 784), (10000,)
    torch.manual_seed(0)
    mlp = text_mlp()
    sweep(load_logistic(args.ckpt), mlp, images, labels)

    features = sparse_rows(512, 5000, torch.Generator().manual_seed(0))  # (512, 5000)
    batches = [(features[i : i + 256], torch.zeros(256, dtype=torch.long)) for i in (0, 256)]
    settings = MeasureSettings((1, 256), args.num_threads, args.min_run_time_s)
    methods = dict.fromkeys(["weight_only_int8", *INTN])
    rows, _ = measure_methods(mlp, methods, batches, QuantizationData(features[:1]), settings)
    print("\n## Text MLP 5000-512-256-128-64-2, random weights: latency against torch fp32 eager\n")
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
