"""Test accuracy of the text recipes against a C-tuned LogisticRegression, on the same split and vectors.

    python benchmarks/text_accuracy.py                                 # 3 settings x 3 seeds, ~12 min on 2 idle cores
    python benchmarks/text_accuracy.py --settings debian --seeds 1     # one setting, one seed
    python benchmarks/text_accuracy.py --corpus my.csv --classes a,b   # your own corpus (all labels without --classes)
    python benchmarks/text_accuracy.py --recipe my_recipe.yaml --seed-recipe none     # a candidate, no seed row

For every setting and seed (the split seed ``data.init_args.seed`` and the training seed ``seed_everything``
move together), three rows on the same stratified 70/10/20 split:
(a) scikit-learn ``LogisticRegression`` (lbfgs, multinomial) on the recommended recipe's fitted TF-IDF vectors, its
    ``C`` chosen on the validation split from ``--c-grid`` (fitted along the grid with warm starts; ties: smaller C);
(b) the recommended recipe and (c) the seed recipe, each trained by ``cli.py fit -c <config>`` in this process, as a
    user runs it (TensorBoard logging, checkpoints, best checkpoint tested after fit; runs in a temporary folder), the
    quantization report and the progress bar left out: they run after training or only print.
Fit seconds: (a) the whole C grid, (b)/(c) ``trainer.fit`` (vectorizing, training, validation, checkpoints).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch
from lightning.pytorch.callbacks import ProgressBar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from callbacks import PostTrainingQuantization
from cli import QuantlightCLI
from datamodules.text_baseline import tuned_logistic_regression
from errors import QuantlightError

ROOT = Path(__file__).resolve().parents[1]
MIRROR = Path(os.environ.get("QUANTLIGHT_MIRROR", ROOT.parent / "shared" / "data"))
# name -> (corpus relative to the mirror, classes to keep; None keeps every label)
SETTINGS = {
    "tweets-2": ("sentiment-tweets/tweets.csv", ["negative", "positive"]),
    "tweets-3": ("sentiment-tweets/tweets.csv", None),
    "debian": ("debian-packages/descriptions.csv", None),
}
VECTORIZER_KEYS = ("vectorizer", "max_features", "ngram_range", "min_df", "sublinear_tf", "lowercase")


class _BenchCLI(QuantlightCLI):
    """``cli.py fit`` as users run it, minus the post-fit quantization report and the progress bar; times the fit."""

    fit_s: float = float("nan")

    def before_fit(self) -> None:
        drop = (PostTrainingQuantization, ProgressBar)
        self.trainer.callbacks[:] = [c for c in self.trainer.callbacks if not isinstance(c, drop)]

    def fit(self, **kwargs) -> None:
        start = time.perf_counter()
        self.trainer.fit(**kwargs)
        self.fit_s = time.perf_counter() - start


@dataclass
class Row:
    """One method's figures over the seeds of one setting."""

    name: str
    acc: list[float] = field(default_factory=list)  # test accuracy per seed, in %
    fit_s: list[float] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # per seed: chosen C, or epochs trained

    def line(self, reference: Row | None) -> str:
        mean = statistics.mean(self.acc)
        spread = f"{min(self.acc):.2f}-{max(self.acc):.2f}"
        delta = f"{mean - statistics.mean(reference.acc):+.2f}" if reference is not None else ""
        per_seed = " ".join(f"{a:.2f}" for a in self.acc)
        return (
            f"  {self.name:34s} {mean:6.2f} % {spread:>13s} {delta:>6s} {statistics.mean(self.fit_s):7.1f}  "
            f"[{per_seed}]  ({', '.join(self.notes)})"
        )


def run_recipe(
    configs: list[str], corpus: str, classes: list[str] | None, seed: int, overrides: list[str]
) -> _BenchCLI:
    """``cli.py fit -c <configs> ...`` on ``corpus`` with split and training seed ``seed``; returns the finished CLI."""
    with tempfile.TemporaryDirectory() as out:
        args = ["fit", *(arg for config in configs for arg in ("-c", config))]
        args += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
        keep = f"[{','.join(classes)}]" if classes else "null"
        args += ["--data.init_args.path", corpus, "--data.init_args.classes", keep]
        args += ["--trainer.logger.init_args.save_dir", out, "--trainer.default_root_dir", out]
        args += ["--trainer.enable_model_summary", "false", *overrides]
        printed = io.StringIO()
        try:
            with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
                cli = _BenchCLI(args)
        except (QuantlightError, SystemExit) as err:  # one line from the CLI (or jsonargparse's usage error)
            raise SystemExit(f"error: `cli.py {' '.join(args)}` failed: {err}\n{printed.getvalue()[-2000:]}") from None
    return cli


def tuned_logistic_regression_timed(cli: _BenchCLI, grid: list[float]) -> tuple[float, float, float]:
    """``(test accuracy %, chosen C, seconds)`` of the C-tuned reference on the CLI run's split and vectors."""
    start = time.perf_counter()
    accuracy, c = tuned_logistic_regression(cli.datamodule, tuple(grid))
    return 100 * accuracy, c, time.perf_counter() - start


def same_vectors(a: _BenchCLI, b: _BenchCLI) -> bool:
    return all(a.datamodule.hparams[k] == b.datamodule.hparams[k] for k in VECTORIZER_KEYS)


def benchmark(name: str, corpus: str, classes: list[str] | None, args: argparse.Namespace) -> None:
    rows = {key: Row(label) for key, label in (("lr", "LogisticRegression, C on val"), ("recipe", "recommended"))}
    if args.seed_recipe:
        rows["seed"] = Row("seed recipe")
    mismatch = False
    for seed in range(args.seeds):
        recipe = run_recipe(args.recipe, corpus, classes, seed, args.overrides)
        rows["recipe"].acc.append(100 * float(recipe.trainer.callback_metrics["test/acc"]))
        rows["recipe"].fit_s.append(recipe.fit_s)
        rows["recipe"].notes.append(f"{recipe.trainer.current_epoch} ep")
        acc, c, seconds = tuned_logistic_regression_timed(recipe, args.c_grid)
        rows["lr"].acc.append(acc)
        rows["lr"].fit_s.append(seconds)
        rows["lr"].notes.append(f"C={c:g}")
        if args.seed_recipe:
            seed_run = run_recipe(args.seed_recipe, corpus, classes, seed, args.overrides)
            rows["seed"].acc.append(100 * float(seed_run.trainer.callback_metrics["test/acc"]))
            rows["seed"].fit_s.append(seed_run.fit_s)
            rows["seed"].notes.append(f"{seed_run.trainer.current_epoch} ep")
            mismatch |= not same_vectors(recipe, seed_run)
        print(f"  ... {name} seed {seed}: " + ", ".join(f"{r.name} {r.acc[-1]:.2f}" for r in rows.values()), flush=True)
    dm = recipe.datamodule
    sizes = "/".join(str(len(dm.split_rows(s))) for s in ("train", "val", "test"))
    print(f"\n{name}: {corpus}, {dm.num_classes} classes, train/val/test {sizes}, {dm.input_dim} features")
    print(f"  {'':34s} {'test acc':>8s} {'min-max':>13s} {'vs LR':>6s} {'fit s':>7s}  [per seed]")
    for row in rows.values():
        print(row.line(rows["lr"] if row is not rows["lr"] else None))
    if mismatch:
        print("  note: the seed recipe's vectorizer settings differ from the recommended one's (LR uses the latter)")
    print(flush=True)


def resolve_config(path: str) -> str:
    """``path`` as given, or under the repository root (the defaults work from any directory)."""
    for candidate in (Path(path), ROOT / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise FileNotFoundError(f"config {path} not found (pass --recipe/--seed-recipe, or --seed-recipe none)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--settings",
        nargs="+",
        choices=list(SETTINGS),
        default=list(SETTINGS),
        help=f"built-in corpus settings from the mirror ({MIRROR}, or $QUANTLIGHT_MIRROR)",
    )
    parser.add_argument("--corpus", help="your own labelled CSV/TSV/JSONL corpus instead of --settings")
    parser.add_argument("--classes", help="with --corpus: labels to keep, comma-separated (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (split and training seed together)")
    parser.add_argument(
        "--recipe",
        nargs="+",
        default=["configs/text_mlp.yaml"],
        help="the recommended recipe's config file(s), passed as -c in order (after configs/base.yaml)",
    )
    parser.add_argument(
        "--seed-recipe",
        nargs="+",
        default=["configs/text_mlp_seed.yaml"],
        help="the seed recipe's config file(s); 'none' leaves the row out",
    )
    parser.add_argument("--c-grid", nargs="+", type=float, default=[0.25, 0.5, 1, 2, 4, 8, 16])
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's); 1 is steadier on a shared CPU")
    parser.add_argument("--quick", action="store_true", help="tweets-2, one seed, one epoch of the recommended recipe")
    args = parser.parse_args()
    args.overrides = ["--trainer.max_epochs", "1"] if args.quick else []
    if args.quick:
        args.settings, args.seeds, args.c_grid, args.seed_recipe = ["tweets-2"], 1, [1.0], ["none"]
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.seed_recipe == ["none"]:
        args.seed_recipe = None
    try:
        args.recipe = [resolve_config(c) for c in args.recipe]
        args.seed_recipe = args.seed_recipe and [resolve_config(c) for c in args.seed_recipe]
    except FileNotFoundError as err:
        parser.error(str(err))
    if args.corpus:
        runs = [(Path(args.corpus).name, str(Path(args.corpus).resolve()), args.classes and args.classes.split(","))]
    else:
        runs = [(name, str(MIRROR / SETTINGS[name][0]), SETTINGS[name][1]) for name in args.settings]
    os.chdir(ROOT)  # configs name repository-relative paths
    for name in ("lightning.pytorch", "lightning.fabric"):  # "GPU available: ...", "kept N rows ..." per run
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    print(f"torch threads {torch.get_num_threads()}; recipe {' '.join(args.recipe)}; seed recipe {args.seed_recipe}")
    for name, corpus, classes in runs:
        benchmark(name, corpus, classes, args)


if __name__ == "__main__":
    main()
