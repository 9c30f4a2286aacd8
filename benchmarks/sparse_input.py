"""Dense rows against term ids and weights: each method's artifact as it was (a 5,000-wide row times the whole
first layer) and as it ships now (an embedding bag over the rows of the terms present), side by side.

    python benchmarks/sparse_input.py [--ckpt runs/text_mlp/version_0/checkpoints/best.ckpt]
        [--methods fp32 onnx_static_int8 onnx_dynamic_int8 onnx_int4 int4_weight_only] [--quick]

Model only (the featurizer left out: ``benchmarks/end_to_end.py`` and ``versus_fasttext.py`` time raw text to
label), the report's own timer (``quantization.measure.rows.time_calls``), 1 thread, on the checkpoint's test split:
per method, latency at batch 1 and 256 for both inputs, the speedup, the memory each holds, and the share of
test predictions on which the two agree. Without ``--ckpt`` (or when it is missing) the tweets recipe is trained
first (one epoch with ``--quick``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.end_to_end import TWEETS, load_text_run, train_tweets
from callbacks.post_training_quantization import training_inputs
from quantization import METHODS, QuantizationData, quantize
from quantization.measure.accuracy import predict
from quantization.measure.latency import first_rows
from quantization.measure.machine import describe, machine_info
from quantization.measure.memory import held_bytes
from quantization.measure.rows import latency_inputs, time_calls

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=REPO / "runs/text_mlp/version_0/checkpoints/best.ckpt")
    parser.add_argument("--corpus", default=None, help="the training corpus, if not where the checkpoint says")
    methods = ["fp32", "onnx_static_int8", "onnx_dynamic_int8", "onnx_int4", "int4_weight_only"]
    parser.add_argument("--methods", nargs="+", default=methods)
    parser.add_argument("--min-run-time-s", type=float, default=0.5, help="timed seconds per artifact and batch size")
    parser.add_argument("--quick", action="store_true", help="two methods, 0.02 s of timed calls per figure")
    args = parser.parse_args()
    if args.quick:
        args.methods, args.min_run_time_s = ["fp32", "onnx_static_int8"], 0.02
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="sparse-input-") as scratch:
        if not args.ckpt.is_file():
            print(f"{args.ckpt} not found: training configs/text_mlp.yaml on {TWEETS} first")
            args.ckpt = train_tweets(scratch, args.quick)
        run(args)


def run(args: argparse.Namespace) -> None:
    print(f"Measured on: {describe(machine_info())}")
    datamodule, net = load_text_run(args.ckpt, args.corpus)
    datamodule.setup("test")
    batches = [(x, y) for x, y in datamodule.test_dataloader()]  # sparse COO, as the report reads them
    calibration = training_inputs(datamodule, 8)
    sparse_data = QuantizationData(example=calibration[0].to_dense()[:1], calibration=calibration, sparse_input=True)
    dense_data = dataclasses.replace(sparse_data, sparse_input=False)
    inputs = latency_inputs(first_rows(batches, 256), (1, 256))
    print(f"\n## {args.ckpt}: {sum(len(y) for _, y in batches):,} test texts, model only, 1 thread, side by side\n")
    header = ["method", "input", "memory", "batch 1 (ms)", "batch 256 (ms)", "speedup bs1 / bs256", "agreement"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for method in args.methods:
        artifacts = {"dense": quantize(net, method, dense_data), "terms": quantize(net, method, sparse_data)}
        figures, labels = {}, {}
        for kind, artifact in artifacts.items():
            runner = METHODS[method].load(artifact.data, net, 1)
            feed = {n: x.to_dense() if kind == "dense" else x for n, x in inputs.items()}
            labels[kind] = predict(runner, [(x.to_dense() if kind == "dense" else x, y) for x, y in batches])[0]
            timing = {n: time_calls(runner, x, 1, args.min_run_time_s)["median"] for n, x in feed.items()}
            ran = "terms" if kind == "terms" and getattr(runner, "sparse_input", False) else "dense"
            figures[kind] = (timing, held_bytes(runner, artifact), ran)
        agreement = float((labels["dense"] == labels["terms"]).float().mean())
        for kind, (timing, memory, ran) in figures.items():
            dense_timing = figures["dense"][0]
            speedup = " / ".join(f"{dense_timing[n] / timing[n]:.1f}x" for n in timing) if kind == "terms" else ""
            cells = [method if kind == "dense" else "", ran, f"{memory / 2**20:.2f} MB"]
            cells += [f"{timing[1]:.3f}", f"{timing[256]:.2f}", speedup, f"{agreement * 100:.2f} %" if speedup else ""]
            print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
