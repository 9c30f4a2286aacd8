"""The main job as a user runs it, stage by stage, beside fastText's whole job on the same split.

    python benchmarks/main_job.py [--rounds 2] [--scale 200000] [--quick]

Each job runs in a fresh process, as typed in a terminal with the progress bar off, and is timed from outside
(wall seconds, start-up and imports included); the stages are read from the run's ``report.json``:
- ``python cli.py --help`` (median of 3);
- MNIST ``fit`` (configs/mnist_logistic.yaml on the offline mirror);
- tweets ``fit`` (configs/text_mlp.yaml, negative vs positive) and, alternating with it in the same run, fastText's
  whole job on the same split: one process that trains 5 epochs of unigrams, tests, quantizes to ``.ftz`` with
  retraining (cutoff 5,000) and saves both (the job MEASURED.md times);
- with ``--scale N``: the text config on N synthetic documents of ``text_scale.py``'s kind (100,000 terms): the
  whole job against its fit stage.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR
from benchmarks.fasttext_baseline import AVAILABLE, INSTALL
from benchmarks.text_scale import write_corpus
from benchmarks.versus_fasttext import fasttext_line

REPO = Path(__file__).resolve().parents[1]
TWEETS = ["--data.init_args.path", str(MIRROR / "sentiment-tweets/tweets.csv")]
TWEETS += ["--data.init_args.classes", "[negative,positive]"]

# fastText's whole job, one process: train, test, quantize with retraining, save both.
_FASTTEXT_JOB = """
import sys
import time
import fasttext
train, test, out = sys.argv[1:4]
for seed in range(5):  # this wheel now and then stops with "Encountered NaN": a new seed, as a user would retry
    try:
        start = time.perf_counter()
        model = fasttext.train_supervised(train, epoch=5, verbose=0, seed=seed)
        training = time.perf_counter() - start
        break
    except RuntimeError as err:
        if "NaN" not in str(err) or seed == 4:
            raise
print(model.test(test))
model.save_model(out + ".bin")
model.quantize(input=train, qnorm=True, retrain=True, cutoff=5000)
print(model.test(test))
model.save_model(out + ".ftz")
print(f"training {training}")
"""


def timed(command: list[str], env: dict | None = None) -> float:
    """Wall seconds of ``command`` in a fresh process (it must succeed)."""
    return run(command, env)[0]


def run(command: list[str], env: dict | None = None) -> tuple[float, str]:
    """Wall seconds and standard output of ``command`` in a fresh process (it must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, check=True, capture_output=True, env=env, text=True)
    return time.perf_counter() - start, done.stdout


def cli_fit(config: str, out: Path, *overrides: str) -> tuple[float, dict]:
    """Wall seconds of ``python cli.py fit -c config`` (progress bar off, runs under ``out``) and its report's job
    (``stages``: seconds per stage; ``fit_to_best``: the best checkpoint's epoch and seconds into the fit)."""
    args = [sys.executable, "cli.py", "fit", "-c", config, "--trainer.logger.init_args.save_dir", str(out)]
    wall = timed([*args, "--trainer.enable_progress_bar", "false", *overrides])
    report = max(out.glob("*/version_*/quantization/report.json"), key=lambda p: p.stat().st_mtime)
    return wall, json.loads(report.read_text())["job"]


def fasttext_files(folder: Path) -> tuple[Path, Path]:
    """The tweets split of the text config (seed 0) as fastText's training and test files."""
    from datamodules import TextDataModule

    settings = yaml.safe_load((REPO / "configs/text_mlp.yaml").read_text())["data"]["init_args"]
    dm = TextDataModule(**settings | {"path": TWEETS[1], "classes": ["negative", "positive"]})
    dm.setup("fit")
    paths = []
    for split in ("train", "test"):
        rows = dm.split_rows(split)
        lines = "".join(f"__label__{y} {fasttext_line(t)}\n" for t, y in zip(rows.texts, rows.labels, strict=True))
        (folder / f"{split}.txt").write_text(lines, encoding="utf-8")
        paths.append(folder / f"{split}.txt")
    return paths[0], paths[1]


def stages_line(stages: dict[str, float]) -> str:
    return ", ".join(f"{name} {seconds:.1f}" for name, seconds in stages.items())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="tweets fit and fastText job, alternating")
    parser.add_argument("--scale", type=int, default=0, help="also the job on this many synthetic documents")
    parser.add_argument("--quick", action="store_true", help="--help, one MNIST fit of 1 epoch, one tweets round")
    args = parser.parse_args()
    env = os.environ | {"PYTHONWARNINGS": "ignore"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        helps = [timed([sys.executable, "cli.py", "--help"], env) for _ in range(1 if args.quick else 3)]
        print(f"python cli.py --help: {statistics.median(helps):.2f} s (median of {len(helps)})")
        epochs = ["--trainer.max_epochs", "1"] if args.quick else []
        mnist = ["--data.data_dir", str(MIRROR), *epochs]
        wall, job = cli_fit("configs/mnist_logistic.yaml", folder / "mnist", *mnist)
        print(f"MNIST fit: {wall:.1f} s wall; stages: {stages_line(job['stages'])}")
        if not AVAILABLE:
            print(f"fastText is not installed ({INSTALL}): the tweets job runs alone")
        train, test = fasttext_files(folder)
        walls, to_best, fasttext_walls, fasttext_training = [], [], [], []
        for round_ in range(1 if args.quick else args.rounds):
            if AVAILABLE:
                command = [sys.executable, "-c", _FASTTEXT_JOB, str(train), str(test), str(folder / "fasttext")]
                wall, out = run(command, env)
                fasttext_walls.append(wall)
                fasttext_training.append(float(out.split("training ")[-1]))
            wall, job = cli_fit("configs/text_mlp.yaml", folder / f"tweets{round_}", *TWEETS, *epochs)
            stages, best = job["stages"], job.get("fit_to_best")
            walls.append(wall)
            to_best += [best["seconds"]] if best else []
            after_fit = sum(s for name, s in stages.items() if name != "fit")
            saved = f"best checkpoint {best['seconds']:.1f} s into the fit (epoch {best['epoch']})" if best else ""
            print(
                f"tweets fit, round {round_ + 1}: {wall:.1f} s wall; after fit {after_fit:.1f} s; "
                f"{saved or 'no best checkpoint saved'}; {stages_line(stages)}"
            )
        if fasttext_walls:
            ours, theirs = statistics.median(walls), statistics.median(fasttext_walls)
            print(f"tweets: Quantlight fit {ours:.1f} s, fastText's whole job {theirs:.1f} s: {ours / theirs:.2f}x")
        if fasttext_walls and to_best:
            ours, theirs = statistics.median(to_best), statistics.median(fasttext_training)
            print(
                f"tweets: fit to the best checkpoint {ours:.2f} s, fastText's training {theirs:.2f} s: "
                f"{ours / theirs:.2f}x"
            )
        if args.scale:
            corpus = folder / "synthetic.csv"
            write_corpus(corpus, args.scale)
            wall, job = cli_fit("configs/text_mlp.yaml", folder / "scale", "--data.init_args.path", str(corpus))
            stages = job["stages"]
            print(
                f"{args.scale:,} synthetic documents: {wall:.1f} s wall, fit stage {stages['fit']:.1f} s: "
                f"{wall / stages['fit']:.2f}x; stages: {stages_line(stages)}"
            )


if __name__ == "__main__":
    main()
