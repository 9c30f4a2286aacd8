"""What the pruned rows' fine-tuning must cost: the text recipe's pruned rows (configs/base.yaml's ``prune`` sizes)
fine-tuned for several epoch counts on the same checkpoints, per corpus and seed: their test accuracy against the
longest setting's, and the pruning stage's seconds beside the fit's.

    python benchmarks/prune_epochs.py [--corpora tweets-2 debian] [--seeds 0 1 2] [--epochs 4 2 1] [--quick]

For every corpus and seed (split and training seed together) ``configs/text_mlp.yaml`` is fitted as a user runs it;
then, per epoch count, the report's pruned rows (fp32 and onnx_int4) are fine-tuned from its best checkpoint and
measured. Printed: per epoch count, each row's test accuracy averaged over seeds, its change against the first
epoch count (points), and the pruning stage's seconds as a share of the fit's.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR, SETTINGS
from benchmarks.timing import fit_cli
from callbacks import PostTrainingQuantization
from quantization.stages import Stages

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=["tweets-2", "debian"], default=["tweets-2", "debian"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", nargs="+", type=int, default=[4, 2, 1])
    parser.add_argument("--quick", action="store_true", help="tweets, one seed, one epoch of fit, epochs 2 and 1")
    args = parser.parse_args()
    if args.quick:
        args.corpora, args.seeds, args.epochs = ["tweets-2"], [0], [2, 1]
    prune = yaml.safe_load((REPO / "configs/base.yaml").read_text())["trainer"]["callbacks"][-1]["init_args"]["prune"]
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    for corpus in args.corpora:
        path, classes = SETTINGS[corpus]
        accuracy: dict[int, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        shares: dict[int, list[float]] = defaultdict(list)
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as folder:
                overrides = ["--data.init_args.path", str(MIRROR / path), "--trainer.enable_progress_bar", "false"]
                overrides += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
                overrides += ["--data.init_args.classes", f"[{','.join(classes)}]"] if classes else []
                overrides += ["--trainer.max_epochs", "1"] if args.quick else []
                start = time.perf_counter()
                cli = fit_cli("configs/text_mlp.yaml", folder, *overrides)
                fit_s = time.perf_counter() - start
                best = cli.trainer.checkpoint_callback.best_model_path
                for epochs in args.epochs:
                    callback = PostTrainingQuantization(methods=["fp32"], prune=prune | {"epochs": epochs})
                    stages = Stages(open("/dev/null", "w"))  # noqa: SIM115 - silent: the table below says it all
                    rows = callback.run(cli.trainer, cli.model, cli.datamodule, best, stages)
                    for row in rows:
                        if "+prune" in row["method"]:
                            accuracy[epochs][row["method"]].append(row["accuracy"] * 100)
                    shares[epochs].append(stages.seconds["prune"] / fit_s)
        first = args.epochs[0]
        print(f"\n{corpus}: pruned rows' test accuracy (%), mean of seeds {args.seeds}; Δ against {first} epochs")
        print("| row | " + " | ".join(f"{e} epochs" for e in args.epochs) + " |")
        print("|---|" + "---|" * len(args.epochs))
        for name in accuracy[first]:
            cells = []
            for epochs in args.epochs:
                mean = statistics.mean(accuracy[epochs][name])
                delta = mean - statistics.mean(accuracy[first][name])
                cells.append(f"{mean:.2f}" + ("" if epochs == first else f" ({delta:+.2f})"))
            print(f"| {name} | " + " | ".join(cells) + " |")
        print(
            "| pruning / fit seconds | " + " | ".join(f"{statistics.mean(shares[e]):.2f}x" for e in args.epochs) + " |"
        )


if __name__ == "__main__":
    main()
