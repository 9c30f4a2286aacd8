"""Post-training quantization (PTQ) against quantization-aware training (QAT), per seed, one report per run.

For each seed, ``cli.py fit`` trains the config as a user runs it (``seed_everything`` and the data seed move
together) with the quantization callback set to the target methods and ``qat`` for each; the report of that
run holds fp32, the PTQ row and the ``+qat`` row, all measured on the same test split. The table gives
each row's accuracy change against that run's fp32, and the mean over seeds.

    python benchmarks/qat.py                                   # MNIST, 3-bit and 2-bit per channel, seeds 0-2
    python benchmarks/qat.py --setting tweets --seeds 0 1      # the tweets MLP (mirror corpus)
    python benchmarks/qat.py --scale absmax --epochs 10 --lr-scale 0.125
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("QUANTLIGHT_MIRROR", ROOT.parent / "shared" / "data"))
SETTINGS = {
    "mnist": ["-c", "configs/mnist_logistic.yaml", "--data.data_dir", str(MIRROR)],
    "tweets": [
        "-c", "configs/text_mlp.yaml", "--data.init_args.path", str(MIRROR / "sentiment-tweets" / "tweets.csv"),
        "--data.init_args.classes", "[negative,positive]",
    ],
}  # fmt: skip
SEED_ARG = {"mnist": "--data.seed", "tweets": "--data.init_args.seed"}


def run(setting: str, seed: int, methods: list[str], args: argparse.Namespace, out: Path) -> list[dict]:
    """One ``fit`` with PTQ and QAT rows for ``methods``; the report's rows."""
    per_layer = {"group_size": None, "scale": args.scale}
    qat = {"epochs": args.epochs, "lr_scale": args.lr_scale}
    command = [
        sys.executable, "cli.py", "fit", *SETTINGS[setting], "--seed_everything", str(seed), SEED_ARG[setting],
        str(seed), "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false",
        "--test_after_fit", "false", f"--trainer.callbacks.methods={json.dumps(methods)}",
        f"--trainer.callbacks.settings={json.dumps(dict.fromkeys(methods, per_layer))}",
        f"--trainer.callbacks.qat={json.dumps(dict.fromkeys(methods, qat))}",
        "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.05",
        *(["--trainer.max_epochs", str(args.main_epochs)] if args.main_epochs else []),
    ]  # fmt: skip
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"fit failed (seed {seed}):\n{proc.stderr[-3000:]}")
    (report,) = out.glob("*/version_*/quantization/report.json")
    return json.loads(report.read_text())["methods"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--setting", choices=sorted(SETTINGS), default="mnist")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["int3_weight_only", "int2_weight_only"])
    parser.add_argument("--scale", choices=["absmax", "mse", "fixed"], default="mse")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr-scale", type=float, default=0.125)
    parser.add_argument("--main-epochs", type=int, help="training epochs before QAT (default: the config's)")
    parser.add_argument("--quick", action="store_true", help="seed 0, 1 training and 1 QAT epoch, 3-bit only")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.methods, args.epochs, args.main_epochs = [0], args.methods[:1], 1, 1

    deltas: dict[str, list[float]] = {}
    print(
        f"{args.setting}: {', '.join(args.methods)} per channel, scale {args.scale}; QAT {args.epochs} epochs at "
        f"{args.lr_scale} x the recipe's learning rate; accuracy change vs that run's fp32 (points, test split)\n"
    )
    print("| seed | fp32 (%) | " + " | ".join(f"{m} | {m}+qat" for m in args.methods) + " |")
    print("|---|---|" + "---|---|" * len(args.methods))
    for seed in args.seeds:
        with tempfile.TemporaryDirectory() as tmp:
            rows = {row["method"]: row for row in run(args.setting, seed, args.methods, args, Path(tmp))}
        cells = [f"{rows['fp32']['accuracy'] * 100:.2f}"]
        for name in (n for m in args.methods for n in (m, f"{m}+qat")):
            deltas.setdefault(name, []).append(rows[name]["accuracy_delta"])
            cells.append(f"{rows[name]['accuracy'] * 100:.2f} ({rows[name]['accuracy_delta']:+.2f})")
        print(f"| {seed} | " + " | ".join(cells) + " |", flush=True)
    print("| mean Δ | | " + " | ".join(f"{statistics.mean(v):+.2f}" for v in deltas.values()) + " |")


if __name__ == "__main__":
    main()
