"""Test accuracy of the text recipes against a C-tuned LogisticRegression and fastText, on the same splits.

    python benchmarks/text_accuracy.py                                 # 3 settings x 3 seeds, ~30 min on 2 busy cores
    python benchmarks/text_accuracy.py --quick                         # the first setting, 1 seed, 1,500 texts
    python benchmarks/text_accuracy.py --settings debian --seeds 1     # one setting, one seed
    python benchmarks/text_accuracy.py --corpus my.csv --classes a,b   # your own corpus (all labels without --classes)
    python benchmarks/text_accuracy.py --recipe my_recipe.yaml --others none     # a candidate alone

For every setting and seed (the split seed ``data.init_args.seed`` and the training seed ``seed_everything``
move together), these rows on the same stratified 70/10/20 split:
(a) scikit-learn ``LogisticRegression`` (lbfgs, multinomial) on the recommended recipe's fitted TF-IDF vectors, its
    ``C`` chosen on the validation split from ``--c-grid`` (fitted along the grid with warm starts; ties: smaller C);
(b) fastText supervised (``benchmarks/fasttext_baseline.py``: the recipe's tokens), unigrams and bigrams, each with
    its epochs and learning rate chosen on the validation split from its grid (ties: the first);
(c) the recommended recipe and (d) each of ``--others`` (default: the previous recipe with a dense first layer, and
    the seed's recipe), trained by ``cli.py fit -c <config>`` in this process, as a user runs it (TensorBoard
    logging, checkpoints, best checkpoint tested after fit; runs in a temporary folder), the quantization report and
    the progress bar left out: they run after training or only print.
Fit seconds: (a) the whole C grid, (b) the chosen setting's training, (c)/(d) ``trainer.fit`` (vectorizing, training,
validation, checkpoints). Torch and fastText run on ``--threads`` threads.
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

from benchmarks import fasttext_baseline
from benchmarks.corpora import MIRROR, SETTINGS, sample_rows
from callbacks import PostTrainingQuantization
from cli import QuantlightCLI
from datamodules.text_baseline import tuned_logistic_regression
from errors import QuantlightError

ROOT = Path(__file__).resolve().parents[1]


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
        if not self.acc:
            return f"  {self.name:34s} {'-':>8s}  ({', '.join(self.notes)})"
        mean = statistics.mean(self.acc)
        spread = f"{min(self.acc):.2f}-{max(self.acc):.2f}"
        delta = f"{mean - statistics.mean(reference.acc):+.2f}" if reference is not None else ""
        per_seed = " ".join(f"{a:.2f}" for a in self.acc)
        return (
            f"  {self.name:34s} {mean:6.2f} % {spread:>13s} {delta:>6s} {statistics.mean(self.fit_s):7.1f}  "
            f"[{per_seed}]  ({', '.join(self.notes)})"
        )


def run_recipe(configs: list[str], corpus: str, classes: list[str] | None, seed: int, *extra: str) -> _BenchCLI:
    """``cli.py fit -c <configs> ...`` on ``corpus`` with split and training seed ``seed``; returns the finished CLI."""
    with tempfile.TemporaryDirectory() as out:
        args = ["fit", *(arg for config in configs for arg in ("-c", config))]
        args += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
        keep = f"[{','.join(classes)}]" if classes else "null"
        args += ["--data.init_args.path", corpus, "--data.init_args.classes", keep]
        args += ["--trainer.logger.init_args.save_dir", out, "--trainer.default_root_dir", out]
        args += ["--trainer.enable_model_summary", "false", *extra]
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


def fasttext_rows(rows: dict[str, Row], cli: _BenchCLI, seed: int, args: argparse.Namespace) -> None:
    """Add one seed to the fastText rows: per n-gram order, the grid setting best on validation (first on ties)."""
    grid = [setting for setting in fasttext_baseline.GRID if not args.quick or setting.epochs == 5]
    runs = fasttext_baseline.train_and_score(
        fasttext_baseline.tokenized_splits(cli.datamodule), grid, args.threads, seed
    )
    for ngrams in (1, 2):
        row = rows[f"fasttext{ngrams}"]
        candidates = [run for setting, run in zip(grid, runs, strict=True) if setting.word_ngrams == ngrams]
        if all(run is None for run in candidates):
            row.notes.append(f"seed {seed}: NaN in every attempt")
            continue
        best = max((run for run in candidates if run is not None), key=lambda run: run.val_acc)  # first of equals
        row.acc.append(best.test_acc)
        row.fit_s.append(best.train_s)
        failed = f", {candidates.count(None)} setting(s) NaN" if None in candidates else ""
        row.notes.append(f"{best.setting.epochs} ep, lr {best.setting.lr:g}{failed}")


def add_run(row: Row, cli: _BenchCLI) -> None:
    row.acc.append(100 * float(cli.trainer.callback_metrics["test/acc"]))
    row.fit_s.append(cli.fit_s)
    row.notes.append(f"{cli.trainer.current_epoch} ep")


def benchmark(name: str, corpus: str, classes: list[str] | None, args: argparse.Namespace) -> None:
    labels = {"lr": "LogisticRegression, C on val", "recipe": "recommended (text_mlp)"}
    if fasttext_baseline.AVAILABLE and args.fasttext:
        labels |= {"fasttext1": "fastText unigrams, set on val", "fasttext2": "fastText bigrams, set on val"}
    labels |= {str(i): Path(config[-1]).stem for i, config in enumerate(args.others)}
    rows = {key: Row(label) for key, label in labels.items()}
    quick = ("--trainer.max_epochs", "2") if args.quick else ()
    for seed in range(args.seeds):
        recipe = run_recipe(args.recipe, corpus, classes, seed, *quick)
        add_run(rows["recipe"], recipe)
        acc, c, seconds = tuned_logistic_regression_timed(recipe, args.c_grid)
        rows["lr"].acc.append(acc)
        rows["lr"].fit_s.append(seconds)
        rows["lr"].notes.append(f"C={c:g}")
        if "fasttext1" in rows:
            fasttext_rows(rows, recipe, seed, args)
        for i, config in enumerate(args.others):
            add_run(rows[str(i)], run_recipe(config, corpus, classes, seed, *quick))
        done = ", ".join(f"{r.name} {r.acc[-1]:.2f}" for r in rows.values() if len(r.acc) > seed)
        print(f"  ... {name} seed {seed}: {done}", flush=True)
    dm = recipe.datamodule
    sizes = "/".join(str(len(dm.split_rows(s))) for s in ("train", "val", "test"))
    print(f"\n{name}: {corpus}, {dm.num_classes} classes, train/val/test {sizes}, {dm.input_dim} features")
    print(f"  {'':34s} {'test acc':>8s} {'min-max':>13s} {'vs LR':>6s} {'fit s':>7s}  [per seed]")
    for row in rows.values():
        print(row.line(rows["lr"] if row is not rows["lr"] else None))
    others = [row for key, row in rows.items() if key != "recipe" and row.acc]
    best = max(others, key=lambda row: statistics.mean(row.acc))
    margin = statistics.mean(rows["recipe"].acc) - statistics.mean(best.acc)
    print(f"  recommended - the best other row ({best.name}): {margin:+.2f} points")
    if not fasttext_baseline.AVAILABLE and args.fasttext:
        print(f"  fastText rows left out: not installed ({fasttext_baseline.INSTALL})")
    print(flush=True)


def resolve_config(path: str) -> str:
    """``path`` as given, or under the repository root (the defaults work from any directory)."""
    for candidate in (Path(path), ROOT / path):
        if candidate.is_file():
            return str(candidate.resolve())
    raise FileNotFoundError(f"config {path} not found (pass --recipe/--others, or --others none)")


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
        "--others",
        nargs="+",
        default=["configs/text_mlp_dense.yaml", "configs/text_mlp_seed.yaml"],
        help="other recipes, one row each (a config file each); 'none' leaves them out",
    )
    parser.add_argument("--c-grid", nargs="+", type=float, default=[0.25, 0.5, 1, 2, 4, 8, 16])
    parser.add_argument("--fasttext", action=argparse.BooleanOptionalAction, default=True, help="the fastText rows")
    parser.add_argument("--threads", type=int, default=1, help="torch and fastText threads (1: steadier when shared)")
    parser.add_argument(
        "--quick", action="store_true", help="the first setting, 1 seed, 1,500 texts, 2 epochs: in seconds"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.seeds, args.settings = 1, args.settings[:1]
    try:
        args.recipe = [resolve_config(c) for c in args.recipe]
        args.others = [] if args.others == ["none"] else [[resolve_config(c)] for c in args.others]
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
    print(f"threads {args.threads}; recipe {' '.join(args.recipe)}; others {[c[0] for c in args.others]}")
    with tempfile.TemporaryDirectory() as folder:
        for name, corpus, classes in runs:
            if args.quick:
                corpus = sample_rows(corpus, classes, 1500, Path(folder) / f"{name}.csv")
            benchmark(name, corpus, classes, args)


if __name__ == "__main__":
    main()
