"""MNIST logistic regression as a device build: flash, RAM and test accuracy of each method's ``device/`` folder, beside
the same bundle's accuracy on ONNX Runtime (the report row's figure).

    python benchmarks/native_device.py [--epochs 3] [--methods onnx_dynamic_int8 onnx_static_int8 onnx_int4 fp32]
        [--images 10000] [--quick]

A logistic regression (784 -> 10) is trained on the mirror's 60,000 training images (Adam, batch 256, the MNIST
datamodule's normalization), quantized by each method and written as a bundle; its device folder is compiled with
``cc -std=c99 -Os -Wall -Werror`` and labels the 10,000 test images, one line of pixel values each, through the
example ``main.c``. ONNX Runtime labels them one image a call (dynamic int8 quantizes activations per call).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR
from modules import LogisticRegression
from quantization import QuantizationData, quantize
from quantization.ship.bundle import write_bundle
from runtime import load_bundle, read_idx_images

PREPROCESSING = {"input": "image", "image_shape": [28, 28], "mean": 0.1307, "std": 0.3081}


def features(images: np.ndarray) -> torch.Tensor:
    pixels = torch.from_numpy(images.reshape(len(images), -1).astype(np.float32))
    return (pixels / 255.0 - PREPROCESSING["mean"]) / PREPROCESSING["std"]


def train(epochs: int) -> torch.nn.Module:
    raw = MIRROR / "MNIST/raw"
    x = features(read_idx_images(raw / "train-images-idx3-ubyte"))
    y = torch.from_numpy(np.frombuffer((raw / "train-labels-idx1-ubyte").read_bytes(), np.uint8, offset=8).copy())
    torch.manual_seed(0)
    net = LogisticRegression().net
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        for i in torch.randperm(len(x)).split(256):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(net(x[i]), y[i].long()).backward()
            optimizer.step()
    return net.eval()


def device_labels(folder: Path, images: np.ndarray) -> list[str]:
    device = folder / "device"
    flags = ["-std=c99", "-Os", "-Wall", "-Werror"]
    subprocess.run(["cc", *flags, "main.c", "predict.c", "-lm", "-o", "classify"], cwd=device, check=True)
    lines = "".join(" ".join(map(str, image.reshape(-1).tolist())) + "\n" for image in images)
    run = subprocess.run([str(device / "classify")], input=lines.encode(), capture_output=True, check=True)
    return run.stdout.decode().splitlines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--methods", nargs="+", default=["onnx_dynamic_int8", "onnx_static_int8", "onnx_int4", "fp32"])
    parser.add_argument("--images", type=int, default=10000, help="test images labelled")
    parser.add_argument("--quick", action="store_true", help="one epoch, the 4-bit method, 500 test images")
    args = parser.parse_args()
    if args.quick:
        args.epochs, args.methods, args.images = 1, ["onnx_int4"], 500
    raw = MIRROR / "MNIST/raw"
    if not (raw / "t10k-images-idx3-ubyte").is_file():
        parser.error(f"{raw} holds no MNIST files: set QUANTLIGHT_MIRROR to the offline data mirror.")
    torch.set_num_threads(1)
    start = time.perf_counter()
    net = train(args.epochs)
    print(f"Trained in {time.perf_counter() - start:.0f} s ({args.epochs} epochs).\n")
    images = read_idx_images(raw / "t10k-images-idx3-ubyte")[: args.images]
    labels_file = (raw / "t10k-labels-idx1-ubyte").read_bytes()
    truth = [str(v) for v in np.frombuffer(labels_file, np.uint8, offset=8)][: args.images]
    calibration = features(read_idx_images(raw / "train-images-idx3-ubyte")[:1024])
    data = QuantizationData(example=calibration[:1], calibration=list(calibration.split(256)))
    print("| method | flash (code + model) | RAM (static + stack bound) | device accuracy | ONNX Runtime accuracy |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            classes = [str(d) for d in range(10)]
            folder = write_bundle(Path(tmp) / method, quantize(net, method, data), net, PREPROCESSING, classes)
            bundle = load_bundle(folder, engine="onnxruntime")
            reference = [bundle.predict(images[i : i + 1])[0] for i in range(len(images))]
            labels = device_labels(folder, images)
            size = bundle.card["native"]["device"]
            device_accuracy = np.mean([a == b for a, b in zip(labels, truth, strict=True)])
            accuracy = np.mean([a == b for a, b in zip(reference, truth, strict=True)])
            same = np.mean([a == b for a, b in zip(labels, reference, strict=True)])
            print(
                f"| {method} | {size['flash_bytes']:,} B ({size['code_bytes']:,} + {size['model_bytes']:,}) | "
                f"{size['ram_bytes']:,} B ({size['static_ram_bytes']:,} + {size['stack_bound_bytes']:,}) | "
                f"{device_accuracy * 100:.2f} % | {accuracy * 100:.2f} % (labels equal {same * 100:.2f} %) |"
            )


if __name__ == "__main__":
    main()
