"""Text training at scale: seconds per epoch, vectorizing seconds and peak RSS against corpus size and vocabulary.

    python benchmarks/text_scale.py            # 100k, 200k, 400k and 1M documents x 5,000 and 100,000 terms
    python benchmarks/text_scale.py --quick    # 2,000 and 8,000 documents, the same table in under a minute
    python benchmarks/text_scale.py --docs 1000000 --terms 100000 --ngram-range 1 2   # one case, with bigrams

The corpora are generated here, seeded: a Zipf vocabulary of 200,000 words (word r drawn with probability
proportional to 1 / (r + 2.7)), 8-40 words a document, 4 labels; each label prefers 2,000 words of its own
(15 % of a document's words are drawn from them), so there is something to learn. Each case is a fresh process
running ``cli.py fit -c configs/text_mlp.yaml`` (the recommended recipe, or ``--config``; ``max_features`` set to
the case's terms) for ``--epochs`` epochs, the quantization report left out (it runs after training): the seconds
to read the CSV and vectorize it (the training split fitted and transformed, the validation split transformed), the
median seconds per epoch (validation and checkpoints included; the process's CPU seconds beside them, steadier when
other jobs share the cores), and the process's peak RSS (``ru_maxrss``: the whole process, Python and torch
included). The last columns give the growth per 4x documents.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS, CLASSES, TOPIC_WORDS, TOPIC_SHARE = 200_000, 4, 2_000, 0.15


def write_corpus(path: Path, documents: int, seed: int = 0) -> None:
    """A labelled CSV corpus of ``documents`` synthetic texts (see the module docstring), written in chunks."""
    rng = np.random.default_rng(seed)
    words = np.array([f"w{np.base_repr(i, 36).lower()}" for i in range(WORDS)], dtype=object)
    p = 1.0 / (np.arange(WORDS) + 2.7)
    cumulative = np.cumsum(p / p.sum())
    topics = rng.choice(np.arange(1_000, 50_000), size=(CLASSES, TOPIC_WORDS), replace=False)
    with path.open("w", encoding="utf-8") as file:
        file.write("text,label\n")
        for start in range(0, documents, 100_000):
            n = min(100_000, documents - start)
            lengths = rng.integers(8, 41, size=n)
            labels = rng.integers(0, CLASSES, size=n)
            ids = np.searchsorted(cumulative, rng.random(lengths.sum()), side="right").clip(max=WORDS - 1)
            owner = np.repeat(labels, lengths)  # (tokens,) each token's document label
            topical = rng.random(len(ids)) < TOPIC_SHARE
            ids[topical] = topics[owner[topical], rng.integers(0, TOPIC_WORDS, size=topical.sum())]
            ends = np.cumsum(lengths)
            tokens = words[ids]
            file.writelines(
                f"{' '.join(tokens[end - length : end])},c{label}\n"
                for end, length, label in zip(ends, lengths, labels, strict=True)
            )


def worker(config: str, corpus: str, terms: int, epochs: int, ngram_range: list[int], threads: int) -> dict:
    """One case, in this process: ``fit`` timed and its peak RSS; returns the figures."""
    import torch

    from benchmarks.timing import EpochTimer
    from callbacks import PostTrainingQuantization
    from cli import QuantlightCLI

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as out:
        args = ["-c", config, "--data.init_args.path", corpus, "--trainer.max_epochs", str(epochs)]
        args += ["--data.init_args.max_features", str(terms), "--data.init_args.ngram_range", json.dumps(ngram_range)]
        args += ["--trainer.logger.init_args.save_dir", out, "--trainer.enable_progress_bar", "false"]
        args += ["--trainer.enable_model_summary", "false"]
        start = time.perf_counter()
        cli = QuantlightCLI(args=args, run=False)  # reads the corpus, fits the vectorizer on the training split
        cli.datamodule.dataset("val")
        vectorize_s = time.perf_counter() - start
        cli.trainer.callbacks[:] = [c for c in cli.trainer.callbacks if not isinstance(c, PostTrainingQuantization)]
        timer = EpochTimer()
        cli.trainer.callbacks.append(timer)
        cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        fit_s = time.perf_counter() - start
    dm = cli.datamodule
    return {
        "vocabulary": dm.input_dim,
        "nnz_per_doc": dm.dataset("train").features.nnz / len(dm.dataset("train")),
        "vectorize_s": vectorize_s,
        "epoch_s": statistics.median(timer.epochs),
        "cpu_epoch_s": statistics.median(timer.cpu_epochs),
        "fit_s": fit_s,
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,  # KiB on Linux
    }


def run_case(corpus: Path, terms: int, args: argparse.Namespace) -> dict:
    command = [sys.executable, __file__, "--worker", str(corpus), "--terms", str(terms), "--epochs", str(args.epochs)]
    command += ["--ngram-range", *map(str, args.ngram_range), "--threads", str(args.threads), "--config", args.config]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"error: the case {corpus.name} x {terms} terms failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def growth(results: dict, docs: list[int], terms: int, key: str, n: int) -> str:
    """``key``'s growth from the previous size, scaled to 4x documents (r ** (ln 4 / ln(size ratio)))."""
    i = docs.index(n)
    if i == 0:
        return ""
    ratio = results[(n, terms)][key] / results[(docs[i - 1], terms)][key]
    return f"{ratio ** (math.log(4) / math.log(n / docs[i - 1])):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--docs", type=int, nargs="+", default=[100_000, 200_000, 400_000, 1_000_000])
    parser.add_argument("--terms", type=int, nargs="+", default=[5_000, 100_000])
    parser.add_argument("--ngram-range", type=int, nargs=2, default=[1, 1])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--config", default="configs/text_mlp.yaml", help="the recipe (its max_features is the case's)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--quick", action="store_true", help="2,000 and 8,000 documents, the first --terms, 1 epoch")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.config, args.worker, args.terms[0], args.epochs, args.ngram_range, args.threads)))
        return
    if args.quick:
        args.docs, args.terms, args.epochs = [2_000, 8_000], args.terms[:1], 1
    docs, results = sorted(args.docs), {}
    with tempfile.TemporaryDirectory() as folder:
        for n in docs:
            corpus = Path(folder) / f"synthetic_{n}.csv"
            write_corpus(corpus, n)
            for terms in args.terms:
                results[(n, terms)] = run_case(corpus, terms, args)
                print(f"  ... {n} documents, {terms} terms: {results[(n, terms)]}", flush=True)
            corpus.unlink()
    print(
        f"\nSynthetic corpora (Zipf vocabulary of {WORDS:,} words, 8-40 words a document), {args.config}, "
        f"ngram_range {tuple(args.ngram_range)}, {args.epochs} epoch(s), {args.threads} thread(s)"
    )
    print("| documents | terms (fitted) | non-zeros/doc | read + vectorize s | s/epoch (CPU) | fit s | peak RSS | "
          "growth per 4x docs: s/epoch | peak RSS |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for terms in args.terms:
        for n in docs:
            r = results[(n, terms)]
            print(
                f"| {n:,} | {terms:,} ({r['vocabulary']:,}) | {r['nnz_per_doc']:.1f} | {r['vectorize_s']:.1f} | "
                f"{r['epoch_s']:.2f} ({r['cpu_epoch_s']:.2f}) | {r['fit_s']:.1f} | {r['peak_rss_gb']:.2f} GB | "
                f"{growth(results, docs, terms, 'epoch_s', n)} | {growth(results, docs, terms, 'peak_rss_gb', n)} |"
            )
    small, large = min(args.terms), max(args.terms)
    for n in docs:
        if small != large:
            a, b = results[(n, small)], results[(n, large)]
            wall, cpu = b["epoch_s"] / a["epoch_s"], b["cpu_epoch_s"] / a["cpu_epoch_s"]
            nnz = b["nnz_per_doc"] / a["nnz_per_doc"]
            print(
                f"  {n:,} documents, an epoch with {large:,} terms / with {small:,} terms: {wall:.2f}x (CPU seconds "
                f"{cpu:.2f}x); the texts hold {nnz:.2f}x the non-zeros, so {wall / nnz:.2f}x per non-zero"
            )


if __name__ == "__main__":
    os.chdir(ROOT)  # the config names repository-relative paths
    main()
