"""Today's budget rule (the validation point estimate against the budget) beside the interval rule (a row is over
budget only when its whole 95 % validation interval lies below -budget), on the same report rows.

    python benchmarks/decision_rule.py [--corpora tweets-2 debian] [--seeds 0 1 2 3 4] [--out runs.jsonl] [--quick]
    python benchmarks/decision_rule.py --summarize runs.jsonl

For every corpus and seed (split and training seed together) ``configs/text_mlp.yaml`` is fitted once as a user runs
it and its default report is run (pruned rows included; fallbacks planned for every row the point rule rejects, so
both rules choose among the same rows). Each rule then recommends from those rows (objective latency_bs1, budget 0.5
points). Printed per rule: how often the recommended row's test delta breaks the budget, and the median shipped bytes
and batch-1 latency of what it recommends. ``--out`` appends one line per run (the table can be printed again from it
with ``--summarize``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR, SETTINGS
from benchmarks.timing import fit_cli
from callbacks import PostTrainingQuantization
from quantization.decide.objectives import RULES, SLACK_POINTS, shipped
from quantization.decide.recommend import recommend
from quantization.stages import Stages

REPO = Path(__file__).resolve().parents[1]
BUDGET, OBJECTIVE = 0.5, "latency_bs1"


def one_run(corpus: str, seed: int, quick: bool, keep: Path | None = None) -> dict:
    """Fit and report once; per rule, the recommended row's test delta, shipped bytes and batch-1 latency (``keep``:
    where the report's ``report.md`` is copied, as ``<corpus>-<seed>.report.md``)."""
    path, classes = SETTINGS[corpus]
    ptq = yaml.safe_load((REPO / "configs/base.yaml").read_text())["trainer"]["callbacks"][-1]["init_args"]
    with tempfile.TemporaryDirectory() as folder:
        overrides = ["--data.init_args.path", str(MIRROR / path), "--trainer.enable_progress_bar", "false"]
        overrides += ["--seed_everything", str(seed), "--data.init_args.seed", str(seed)]
        overrides += ["--data.init_args.classes", f"[{','.join(classes)}]"] if classes else []
        overrides += ["--trainer.max_epochs", "1"] if quick else []
        cli = fit_cli("configs/text_mlp.yaml", folder, *overrides)
        prune = ptq["prune"] | ({"epochs": 1} if quick else {})
        callback = PostTrainingQuantization(min_run_time_s=ptq["min_run_time_s"], prune=prune)
        callback.budget = dataclasses.replace(callback.budget, rule="point")  # fallbacks for every row either rejects
        stages = Stages(open("/dev/null", "w"))  # noqa: SIM115 - silent: the table below says it all
        best = cli.trainer.checkpoint_callback.best_model_path
        rows = callback.run(cli.trainer, cli.model, cli.datamodule, best, stages)
        if keep is not None:
            report = next(Path(folder).rglob("quantization/report.md"))
            (keep / f"{corpus}-{seed}.report.md").write_text(report.read_text())
    result: dict = {"corpus": corpus, "seed": seed, "rows": len(rows)}
    for rule in RULES:
        method = recommend(rows, BUDGET, OBJECTIVE, rule=rule)["method"]
        row = next(r for r in rows if r["method"] == method)
        result[rule] = {
            "method": method,
            "test_delta": row["accuracy_delta"],
            "val_delta": row["val_accuracy_delta"],
            "breaks": row["accuracy_delta"] < -BUDGET - SLACK_POINTS,
            "shipped_bytes": shipped(row),
            "latency_bs1_ms": row["latency_ms"]["1"]["median"],
        }
    return result


def summarize(results: list[dict]) -> None:
    """Per run, each rule's choice; then per corpus and overall, each rule's break rate and medians."""
    print(f"\nBudget {BUDGET} points, objective {OBJECTIVE}; test delta of the recommended row (points)")
    print("| corpus | seed | " + " | ".join(f"{rule} rule: row, Δ val / Δ test" for rule in RULES) + " |")
    print("|---|---|" + "---|" * len(RULES))
    for r in results:
        cells = [f"{r[rule]['method']}, {r[rule]['val_delta']:+.2f} / {r[rule]['test_delta']:+.2f}" for rule in RULES]
        print(f"| {r['corpus']} | {r['seed']} | " + " | ".join(cells) + " |")
    corpora = dict.fromkeys(r["corpus"] for r in results)
    groups = {corpus: [r for r in results if r["corpus"] == corpus] for corpus in corpora}
    groups["all"] = results
    print("\n| runs | rule | breaks the budget on test | median shipped (KB) | median latency bs1 (ms) |")
    print("|---|---|---|---|---|")
    for name, group in groups.items():
        for rule in RULES:
            breaks = sum(r[rule]["breaks"] for r in group)
            kb = statistics.median(r[rule]["shipped_bytes"] for r in group) / 1024
            ms = statistics.median(r[rule]["latency_bs1_ms"] for r in group)
            print(f"| {name} ({len(group)}) | {rule} | {breaks} of {len(group)} | {kb:,.1f} | {ms:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=["tweets-2", "debian"], default=["tweets-2", "debian"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, help="append each run's result here (JSON Lines)")
    parser.add_argument("--summarize", type=Path, help="print the table from a --out file and stop")
    parser.add_argument("--quick", action="store_true", help="tweets, one seed, one epoch of fit and of pruning")
    args = parser.parse_args()
    if args.summarize:
        summarize([json.loads(line) for line in args.summarize.read_text().splitlines() if line.strip()])
        return
    if args.quick:
        args.corpora, args.seeds = ["tweets-2"], [0]
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    results = []
    for seed in args.seeds:  # both corpora per seed: a run cut short still has both
        for corpus in args.corpora:
            results.append(one_run(corpus, seed, args.quick, args.out.parent if args.out else None))
            if args.out:
                with args.out.open("a") as file:
                    file.write(json.dumps(results[-1]) + "\n")
    summarize(results)


if __name__ == "__main__":
    main()
