"""ONNX int8 weight options side by side: size, error, latency, and int16 saturation on AVX2 without VNNI.

The text MLP (5000-512-256-128-64-2, random weights, TF-IDF-like sparse rows), quantized by both
ONNX methods with each ``onnx_weights`` choice, per channel and per tensor. "AVX2 saturated" is the
share of u8 x s8 pair sums that overflow int16 when the artifact's own quantized activations and
weights are replayed with AVX2's ``vpmaddubsw`` arithmetic (``quantization.artifacts.int8_overflow``): what
a CPU without VNNI would compute, whatever CPU runs this script.

    python benchmarks/onnx_int8_weights.py [--num-threads 1] [--min-run-time-s 0.2]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.quantization import sparse_rows, text_mlp
from quantization import QuantizationData, quantize
from quantization.artifacts.int8_overflow import avx2_saturation
from quantization.artifacts.onnx_runtime import OrtRunner
from quantization.measure.machine import describe, machine_info
from quantization.measure.rows import MeasureSettings, latency_inputs, measure_artifact
from quantization.methods._onnx_int8 import WEIGHT_TYPES


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--min-run-time-s", type=float, default=0.2, help="timed seconds per variant and batch size")
    parser.add_argument("--quick", action="store_true", help="a few seconds: 0.01 s of timed calls per figure")
    args = parser.parse_args()
    if args.quick:
        args.min_run_time_s = 0.01
    torch.manual_seed(0)
    net = text_mlp()
    features = sparse_rows(512, 5000, torch.Generator().manual_seed(0))  # (512, 5000)
    batches = [(features[i : i + 256], torch.zeros(256, dtype=torch.long)) for i in (0, 256)]
    settings = MeasureSettings((1, 256), args.num_threads, args.min_run_time_s)
    inputs = latency_inputs(features, settings.latency_batch_sizes)
    reference = net(features)
    data = QuantizationData(example=features[:1], calibration=[features[i : i + 64] for i in range(0, 256, 64)])
    fp32, _ = measure_artifact(quantize(net, "fp32", data), net, batches, inputs, settings)
    print(f"Measured on: {describe(machine_info())}; {args.num_threads} thread(s)\n")
    print("| method | weights | scales | size (KB) | max rel. error | AVX2 saturated | bs1 speedup | bs256 speedup |")
    print("|---|---|---|---|---|---|---|---|")
    for method in ("onnx_dynamic_int8", "onnx_static_int8"):
        for weights in WEIGHT_TYPES:
            for per_channel in (True, False):
                artifact = quantize(net, method, data, {"weights": weights, "per_channel": per_channel})
                row, _ = measure_artifact(artifact, net, batches, inputs, settings)
                logits = OrtRunner(artifact.data).logits(features)
                error = float((logits - reference).abs().max() / reference.abs().max())
                saturated = max(avx2_saturation(artifact.data, {"x": features[:64].numpy()}).values())
                speedups = [fp32["latency_ms"][n]["median"] / row["latency_ms"][n]["median"] for n in ("1", "256")]
                print(
                    f"| {method} | {weights} | {'channel' if per_channel else 'tensor'} | "
                    f"{artifact.size_bytes / 1024:.0f} | {error:.4f} | {saturated * 100:.2f} % | "
                    f"{speedups[0]:.2f}x | {speedups[1]:.2f}x |"
                )


if __name__ == "__main__":
    main()
