"""ONNX Runtime 4-bit weights (``onnx_int4``) side by side with fp32, on the text MLP and MNIST logistic regression.

Rows: torch fp32 (the baseline), ONNX Runtime fp32 with every Linear as ``MatMul + Add`` (the graph
``onnx_int4`` quantizes), ``onnx_int4`` at block 32 and 128 with ``accuracy_level`` 0 (fp32 compute)
and 4 (int8 compute), and block 32 asymmetric. Random weights and inputs, so accuracy means nothing
here: size, the largest logit error relative to the largest fp32 logit, agreement of predictions,
and latency are the figures. Every artifact is measured by ``quantization.measure.rows.measure_artifact``, as the
PostTrainingQuantization callback measures it.

    python benchmarks/int4.py [--num-threads 1] [--min-run-time-s 0.2] [--batch-sizes 1 256]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import onnx
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.quantization import run_both_models
from quantization import METHODS, Artifact, QuantizationData, quantize
from quantization.artifacts.onnx_runtime import export_onnx
from quantization.measure.against_fp32 import compare_to_baseline
from quantization.measure.rows import Batch, MeasureSettings, latency_inputs, measure_artifact
from quantization.methods._onnx_matmul import gemms_to_matmuls, linear_gemms

INT4_VARIANTS = [
    {"block_size": 32, "accuracy_level": 0},
    {"block_size": 32, "accuracy_level": 4},
    {"block_size": 128, "accuracy_level": 0},
    {"block_size": 128, "accuracy_level": 4},
    {"block_size": 32, "accuracy_level": 4, "symmetric": False},
]


def ort_fp32_matmul(net: nn.Module, example: torch.Tensor) -> Artifact:
    """The fp32 ONNX graph with every Linear as ``MatMul + Add``; it runs in the plain ONNX Runtime session
    that every ``.onnx`` artifact loads into (``onnx_int4``'s loader)."""
    model = onnx.load_from_string(export_onnx(net, example))
    gemms_to_matmuls(model, linear_gemms(model.graph))
    return Artifact("onnx_int4", model.SerializeToString(), ".onnx")


def variants(net: nn.Module, data: QuantizationData) -> dict[str, Artifact]:
    """Label -> artifact, torch fp32 first."""
    found = {"torch fp32": quantize(net, "fp32", data), "ORT fp32 (MatMul+Add)": ort_fp32_matmul(net, data.example)}
    for settings in INT4_VARIANTS:
        label = f"onnx_int4 block {settings['block_size']}, accuracy_level {settings['accuracy_level']}"
        label += "" if settings.get("symmetric", True) else ", asymmetric"
        found[label] = quantize(net, "onnx_int4", data, settings)
    return found


def max_relative_error(artifact: Artifact, net: nn.Module, features: torch.Tensor) -> float:
    """``max |logit - fp32 logit| / max |fp32 logit|`` over ``features``."""
    with torch.no_grad():
        reference = net(features)  # (N, num_classes)
    logits = METHODS[artifact.method].load(artifact.data, net, 1).logits(features)
    return float((logits - reference).abs().max() / reference.abs().max())


def table(rows: list[dict]) -> str:
    sizes = list(rows[0]["latency_ms"])
    header = ["variant", "size", "fp32/size", "int4 weights", "max rel. error", "agreement"]
    header += [f"batch {n}: ms (speedup)" for n in sizes]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        fraction = row.get("int4_weight_fraction")
        cells = [
            row["method"],
            f"{row['size_bytes'] / 1e6:.2f} MB" if row["size_bytes"] >= 1e6 else f"{row['size_bytes'] / 1e3:.1f} KB",
            f"{row['size_ratio']:.2f}x",
            "-" if fraction is None else f"{fraction * 100:.0f} %",
            f"{row['max_relative_error']:.4f}",
            f"{row['agreement'] * 100:.1f} %",
        ]
        cells += [f"{row['latency_ms'][n]['median']:.3f} ({row['speedup'][n]:.2f}x)" for n in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def benchmark(name: str, net: nn.Module, features: torch.Tensor, classes: int, settings: MeasureSettings) -> None:
    labels = torch.randint(0, classes, (len(features),), generator=torch.Generator().manual_seed(1))
    batches: list[Batch] = [(features[i : i + 256], labels[i : i + 256]) for i in range(0, len(features), 256)]
    data = QuantizationData(example=features[:1])
    inputs = latency_inputs(features[: max(settings.latency_batch_sizes)], settings.latency_batch_sizes)
    start = time.perf_counter()
    rows, baseline, baseline_predictions = [], {}, torch.empty(0)
    for label, artifact in variants(net, data).items():
        row, predictions = measure_artifact(artifact, net, batches, inputs, settings)
        if not rows:
            baseline, baseline_predictions = row, predictions
        agreement = float((predictions == baseline_predictions).float().mean())
        row = compare_to_baseline(row, baseline, agreement) | {"method": label}
        rows.append(row | {"max_relative_error": max_relative_error(artifact, net, features)})
    seconds = time.perf_counter() - start
    print(f"\n## {name}: {len(rows)} variants measured in {seconds:.1f} s, {settings.num_threads} thread(s)\n")
    print(table(rows))


def main() -> None:
    run_both_models(__doc__.splitlines()[0], benchmark)


if __name__ == "__main__":
    main()
