"""Smaller than FastText.zip at equal accuracy: the text recipe's report with its pruned rows (the default
``prune`` sizes of configs/base.yaml), per corpus and seed, against that run's fp32; the most accurate row under
each byte target, its bundle checked against its report row, and FastText.zip on the same split beside it.

    python benchmarks/vocabulary_pruning.py [--corpora tweets debian] [--seeds 0 1 2]
        [--methods onnx_int4 onnx_static_int8] [--importance weight weight_x_input weight_x_rms_input frequency]
        [--quick]

For every corpus and seed (the split seed and the training seed together), ``configs/text_mlp.yaml`` is trained as a
user runs it and its report measured with ``--methods`` (fp32 always) and the default pruned rows. Bytes are what a
bundle ships: the artifact and its ``preprocessing.json`` (KB = 1,024 bytes). Under each byte target the row a
``max_bytes`` budget recommends (the most accurate on validation among those that fit) is taken, and its test
accuracy compared with that run's fp32; that row's bundle is written and predicts the raw test texts, which must
give the labels the report row measured (agreement), and a fresh process loads it (peak RSS, import + load).
FastText.zip: fastText supervised as ``benchmarks/versus_fasttext.py`` trains it (epochs best on validation), then
``quantize`` with the settings of the issue's table, each against that fastText's own ``.bin``. ``--importance``
with more than one rule re-runs the pruned rows with each rule on the same checkpoints (the rule comparison).
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR
from benchmarks.timing import fit_cli
from benchmarks.versus_fasttext import CORPORA, REPO, fasttext_line, train_fasttext
from callbacks import PostTrainingQuantization
from callbacks.post_training_quantization import load_net, report_root, test_batches
from callbacks.prune_settings import PruneSettings
from cli import QuantlightCLI
from quantization import METHODS
from quantization.candidates.pruning import IMPORTANCE, featurized_batches
from quantization.decide.frontier import frontier_rows
from quantization.decide.recommend import recommend
from quantization.measure.accuracy import predict
from quantization.measure.machine import describe, machine_info
from quantization.measure.memory import bundle_footprint
from quantization.registry import Artifact
from quantization.ship.bundle import write_bundle
from runtime import load_bundle

KB = 1024
# corpus -> byte targets and the most test accuracy each may lose against that run's fp32 (points)
TARGETS = {"tweets": [(450, 0.5), (200, 1.0), (100, 1.0)], "debian": [(450, 1.0)]}
# FastText.zip settings of the table: (cutoff, dsub)
FTZ = [(100_000, 2), (5_000, 2), (2_000, 4), (1_000, 8)]


def fit(corpus: Path, classes: str | None, seed: int, folder: Path, args: argparse.Namespace) -> QuantlightCLI:
    """``configs/text_mlp.yaml`` on the corpus with ``seed``, trained as a user runs it, the report left for later."""
    cli_args = ["--data.init_args.path", str(corpus), "--trainer.enable_progress_bar", "false"]
    cli_args += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
    cli_args += ["--data.init_args.classes", classes] if classes else []
    cli_args += ["--trainer.max_epochs", "1"] if args.quick else []
    return fit_cli("configs/text_mlp.yaml", str(folder), *cli_args)


def report(cli: QuantlightCLI, callback: PostTrainingQuantization) -> list[dict]:
    """The quantization report on the run's best checkpoint (its own console table left out)."""
    logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        return callback.run(cli.trainer, cli.model, cli.datamodule, cli.trainer.checkpoint_callback.best_model_path)
    finally:
        logger.setLevel(level)


def check_bundle(cli: QuantlightCLI, row: dict, folder: Path) -> dict:
    """Write the row's bundle, label the raw test texts with it, and compare with the labels its artifact gives on
    the inputs the report measured it on; a fresh process's footprint."""
    dm = cli.datamodule
    quantized = Path(report_root(cli.trainer)) / "quantization"
    data = (quantized / row["artifact"]).read_bytes()
    artifact = Artifact(row["base_method"], data, Path(row["artifact"]).suffix, name=row["method"])
    preprocessing = json.loads((quantized / row["preprocessing"]).read_text()) if "preprocessing" in row else None
    net = load_net(cli.model, cli.trainer.checkpoint_callback.best_model_path)
    bundle_folder = write_bundle(folder / row["method"], artifact, net, preprocessing or dm.preprocessing(), dm.classes)
    texts = dm.split_rows("test").texts
    labels = load_bundle(bundle_folder).predict(texts)
    batches = test_batches(dm)
    if preprocessing is not None:  # a pruned row read its own vocabulary's vectors
        batches = featurized_batches(preprocessing, texts, torch.cat([y for _, y in batches]), len(batches[0][1]))
    source = None if row["base_method"] != "fp32" else net  # torch artifacts of flat models load on their own
    measured, _ = predict(METHODS[row["base_method"]].load(data, source, 1), batches)
    agreement = statistics.mean(a == dm.classes[b] for a, b in zip(labels, measured.tolist(), strict=True))
    footprint = bundle_footprint(bundle_folder, texts[0])
    return {
        "agreement": agreement,
        "peak_rss_mb": footprint["peak_rss_bytes"] / 2**20,
        "import_load_s": footprint["import_load_s"],
    }


def fasttext_zip(cli: QuantlightCLI, folder: Path, quick: bool) -> dict:
    """fastText on the run's split and its FastText.zip at each of :data:`FTZ`: size and test accuracy (points)."""
    import fasttext

    dm = cli.datamodule
    train, val, test = (dm.split_rows(split) for split in ("train", "val", "test"))
    train_fasttext((train.texts, train.labels), (val.texts, val.labels), folder, [5] if quick else [5, 10, 25])

    def accuracy(model) -> float:
        lines = [fasttext_line(t) for t in test.texts]
        return 100 * statistics.mean(p[0][9:] == y for p, y in zip(model.predict(lines)[0], test.labels, strict=True))

    figures = {
        "bin": (folder / "model.bin").stat().st_size,
        "bin_accuracy": accuracy(fasttext.load_model(str(folder / "model.bin"))),
    }
    for cutoff, dsub in FTZ[1:2] if quick else FTZ:
        model = fasttext.load_model(str(folder / "model.bin"))
        model.quantize(input=str(folder / "train.txt"), qnorm=True, retrain=True, cutoff=cutoff, dsub=dsub)
        model.save_model(str(folder / "model.ftz"))
        figures[(cutoff, dsub)] = ((folder / "model.ftz").stat().st_size, accuracy(model))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["onnx_int4", "onnx_static_int8"])
    parser.add_argument(
        "--importance",
        nargs="+",
        choices=IMPORTANCE,
        default=["weight"],
        help="pruning rules to compare (the first is the report's)",
    )
    parser.add_argument(
        "--units",
        nargs="+",
        type=int,
        default=[],
        help="hidden units to compare at --units-terms terms (0: all), e.g. 0 64 32 16",
    )
    parser.add_argument("--units-terms", type=int, default=2000, help="the vocabulary size of the --units sweep")
    parser.add_argument("--no-fasttext", action="store_true", help="leave FastText.zip out")
    parser.add_argument("--quick", action="store_true", help="tweets, one seed, one epoch, one pruned size")
    args = parser.parse_args()
    if args.quick:
        args.corpora, args.seeds, args.methods = args.corpora[:1], args.seeds[:1], args.methods[:1]
    try:
        import fasttext  # noqa: F401
    except ImportError:
        args.no_fasttext = True
    torch.set_num_threads(1)
    print(f"Measured on: {describe(machine_info())}")
    for name in args.corpora:
        run_corpus(name, args)


def run_corpus(name: str, args: argparse.Namespace) -> None:
    file, classes, title = CORPORA[name]
    rows_by_seed, chosen, checks, ftz, rules = [], defaultdict(list), defaultdict(list), [], defaultdict(list)
    fit_s = []
    for seed in args.seeds:
        with tempfile.TemporaryDirectory(prefix=f"pruning-{name}-") as tmp:
            folder = Path(tmp)
            start = time.perf_counter()
            cli = fit(MIRROR / file, classes, seed, folder / "runs", args)
            fit_s.append(time.perf_counter() - start)
            callback = PostTrainingQuantization(
                methods=args.methods,
                min_run_time_s=0.02 if args.quick else 0.1,
                prune=prune_values(args),
            )
            rows = report(cli, callback)
            rows_by_seed.append(rows)
            checked: dict[str, dict] = {}  # one bundle check per row, whatever targets it serves
            for kb, drop in TARGETS.get(name, []):
                rec = recommend(rows, drop, "accuracy", kb * KB)
                row = next(r for r in rows if r["method"] == rec["method"])
                chosen[kb].append(row)
                if row["method"] not in checked:
                    checked[row["method"]] = check_bundle(cli, row, folder / "bundles")
                checks[kb].append(checked[row["method"]])
            for rule in args.importance[1:]:
                rerun = PostTrainingQuantization(
                    methods=[],
                    latency_batch_sizes=[1],
                    min_run_time_s=0.01,
                    prune=prune_values(args) | {"importance": rule, "methods": args.methods[:1]},
                )
                rules[rule].append(report(cli, rerun))
            if args.units:
                sizes = [{"terms": args.units_terms, "hidden": units or None} for units in args.units]  # 0: all
                rerun = PostTrainingQuantization(
                    methods=[],
                    latency_batch_sizes=[1],
                    min_run_time_s=0.01,
                    prune=prune_values(args) | {"sizes": sizes, "methods": args.methods[:1]},
                )
                rules["units"].append(report(cli, rerun))
            if not args.no_fasttext:
                ftz.append(fasttext_zip(cli, folder, args.quick))
            cli.trainer.logger.finalize("success")  # the reports reopened its event writer: closed before cleanup
    print_corpus(title, name, args, rows_by_seed, chosen, checks, ftz, rules, fit_s)


def prune_values(args: argparse.Namespace) -> dict:
    """The default pruned sizes (configs/base.yaml), or one small size for a quick run."""
    if args.quick:
        return {"sizes": [{"terms": 2000, "hidden": 32}], "methods": args.methods, "epochs": 1}
    config = REPO / "configs" / "base.yaml"
    callbacks = yaml.safe_load(config.read_text())["trainer"]["callbacks"]
    prune = next(c for c in callbacks if c["class_path"].endswith("PostTrainingQuantization"))["init_args"]["prune"]
    PruneSettings.from_values(prune)  # checked as the CLI checks it
    return prune | {"methods": ["fp32", *args.methods], "importance": args.importance[0]}


def _mean(values: list[float]) -> str:
    return f"{statistics.mean(values):+.2f}"


def _deltas(values: list[float]) -> str:
    """``+0.12 (+0.30, -0.10, +0.16)``: the mean, then each seed."""
    return f"{_mean(values)} ({', '.join(f'{v:+.2f}' for v in values)})"


def _table(header: list[str], lines: list[list[str]]) -> None:
    print("\n| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for cells in lines:
        print("| " + " | ".join(cells) + " |")


def _found(rows_by_seed: list[list[dict]], method: str) -> list[dict]:
    return [next(r for r in rows if r["method"] == method) for rows in rows_by_seed]


def print_corpus(title, name, args, rows_by_seed, chosen, checks, ftz, rules, fit_s) -> None:
    seeds = ", ".join(map(str, args.seeds))
    fit = f"fit {statistics.mean(fit_s):.0f} s a seed"
    print(f"\n## {title}: seeds {seeds}, test accuracy vs that run's fp32 ({fit})\n")
    accuracies = ", ".join(f"{r['accuracy'] * 100:.2f} %" for r in _found(rows_by_seed, "fp32"))
    print(f"fp32 test accuracy: {accuracies}")
    names = sorted((r["method"] for r in rows_by_seed[0]), key=lambda m: _shipped(rows_by_seed[0], m))
    lines = []
    for method in names:
        found = _found(rows_by_seed, method)
        shipped = statistics.mean(r["shipped_bytes"] for r in found) / KB
        pre = statistics.mean(r["preprocessing_bytes"] for r in found) / KB
        frontier = sum(_on_frontier(rows, method) for rows in rows_by_seed)
        cells = [f"`{method}`", f"{shipped:.1f}", f"{shipped - pre:.1f}", f"{pre:.1f}"]
        cells += [_deltas([r["accuracy_delta"] for r in found]), _mean([r["val_accuracy_delta"] for r in found])]
        lines.append([*cells, f"{frontier} of {len(found)}"])
    header = ["row", "shipped (KB)", "artifact (KB)", "preprocessing (KB)", "Δ test (points, mean; per seed)"]
    _table([*header, "Δ val (mean)", "on the frontier (seeds)"], lines)
    lines = []
    for kb, drop in TARGETS.get(name, []) if chosen else []:
        picked, tests = chosen[kb], [r["accuracy_delta"] for r in chosen[kb]]
        largest = max(r["shipped_bytes"] for r in picked) / KB
        met = largest <= kb and statistics.mean(tests) >= -drop
        agreement = min(c["agreement"] for c in checks[kb]) * 100
        rss = statistics.mean(c["peak_rss_mb"] for c in checks[kb])
        load = statistics.mean(c["import_load_s"] for c in checks[kb])
        methods = ", ".join(f"`{r['method']}`" for r in picked)
        cells = [f"<= {kb} KB within {drop}", methods, f"{largest:.1f}", _deltas(tests), "yes" if met else "**no**"]
        lines.append([*cells, f"{agreement:.2f} %", f"{rss:.0f} MB, {load:.2f} s"])
    if lines:
        header = ["target", "the most accurate row under it (validation), per seed", "shipped (KB, largest)"]
        header += ["Δ test (points, mean; per seed)", "met", "bundle agreement with its row"]
        _table([*header, "bundle peak RSS, import + load"], lines)
    if ftz:
        bins = [f["bin_accuracy"] for f in ftz]
        lines = [
            [
                "fastText `.bin`",
                f"{statistics.mean(f['bin'] for f in ftz) / KB:.0f}",
                f"{statistics.mean(bins):.2f} %",
                "",
            ]
        ]
        for key in [k for k in ftz[0] if isinstance(k, tuple)]:
            sizes, accuracies = [f[key][0] for f in ftz], [f[key][1] for f in ftz]
            deltas = [a - b for a, b in zip(accuracies, bins, strict=True)]
            cells = [f"cutoff {key[0]}, dsub {key[1]}", f"{statistics.mean(sizes) / KB:.0f}"]
            lines.append([*cells, f"{statistics.mean(accuracies):.2f} %", _deltas(deltas)])
        header = ["FastText.zip (same split)", "size (KB, mean)", "test accuracy (mean)"]
        _table([*header, "Δ vs its .bin (points, mean; per seed)"], lines)
    if len(args.importance) > 1:
        by_rule = {args.importance[0]: rows_by_seed} | {rule: rules[rule] for rule in args.importance[1:]}
        lines = []
        for method in [m for m in names if m.startswith(f"{args.methods[0]}+prune")]:
            cells = [f"`{method}`"]
            for rule in args.importance:
                found = _found(by_rule[rule], method)
                test, val = _mean([r["accuracy_delta"] for r in found]), _mean([r["val_accuracy_delta"] for r in found])
                cells.append(f"test {test}, val {val}")
            lines.append(cells)
        _table(["importance: Δ vs fp32 (points, mean)", *args.importance], lines)
    if rules.get("units"):
        lines = []
        for method in [r["method"] for r in rules["units"][0] if "+prune" in r["method"]]:
            found = _found(rules["units"], method)
            shipped = f"{statistics.mean(r['shipped_bytes'] for r in found) / KB:.1f}"
            val = _mean([r["val_accuracy_delta"] for r in found])
            lines.append([f"`{method}`", shipped, _deltas([r["accuracy_delta"] for r in found]), val])
        header = [f"{args.units_terms:,} terms, hidden units kept", "shipped (KB, mean)"]
        _table([*header, "Δ test (points, mean; per seed)", "Δ val (mean)"], lines)


def _shipped(rows: list[dict], method: str) -> int:
    return next(r["shipped_bytes"] for r in rows if r["method"] == method)


def _on_frontier(rows: list[dict], method: str) -> bool:
    return next(r["on_frontier"] for r in frontier_rows(rows) if r["method"] == method)


if __name__ == "__main__":
    main()
