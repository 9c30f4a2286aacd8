"""fastText beside a Quantlight bundle on the text recipe's own split: accuracy, training seconds, file bytes,
per-text predict latency at batch 1, and a fresh process's peak RSS and import + load time, side by side.

    python benchmarks/versus_fasttext.py [--corpora tweets debian]
        [--methods onnx_static_int8 onnx_dynamic_int8 onnx_int4] [--texts 512] [--rounds 7] [--quick]

fastText (the ``fasttext-numpy2-wheel`` package, ``pip install '.[bench]'``; ``make bench`` installs it) trains
supervised on the training texts of ``TextDataModule``'s split (lower-cased, one line each), with its defaults
(unigrams, dim 100) and the epoch count of 5, 10 or 25 that is best on the validation split; ``.ftz`` is its
``quantize`` (FastText.zip: 5,000 features kept, as the recipe's vocabulary, product-quantized, retrained).
Quantlight trains ``configs/text_mlp.yaml`` on the same split, quantizes the best checkpoint with ``--methods``
(and fp32) and ships the recommended row (objective ``latency_bs1``) as a bundle, read by ``runtime`` on each of its
engines: numpy and ONNX Runtime, and the native core (``quantlight_native``, when built; its labels are compared with
the artifact's on ONNX Runtime one text a call, as the native core computes). One raw text in, one label out,
1 thread: fastText is given ``text.lower()`` (it was trained on lower-cased lines), the bundle the raw text. Every
pipeline is timed in the same rounds, in turn.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR
from benchmarks.timing import fit_cli
from callbacks import PostTrainingQuantization
from callbacks.post_training_quantization import report_root, training_inputs
from cli import QuantlightCLI
from quantization import QuantizationData, quantize
from quantization.artifacts.onnx_runtime import OrtRunner
from quantization.measure.machine import describe, machine_info
from quantization.measure.memory import RUNTIME_ROOT, bundle_footprint, fresh_process
from runtime import load_bundle
from runtime.native_bundle import NATIVE_FILE, native_core

REPO = Path(__file__).resolve().parents[1]
CORPORA = {  # name -> (file in the mirror, classes kept, title)
    "tweets": ("sentiment-tweets/tweets.csv", "[negative,positive]", "tweets, negative vs positive"),
    "debian": ("debian-packages/descriptions.csv", None, "Debian package descriptions, 14 sections"),
}


def fasttext_line(text: str) -> str:
    """What fastText reads: one lower-cased line (its own tokenizer splits on whitespace)."""
    return text.replace("\n", " ").lower()


def fasttext_accuracy(model, texts: list[str], labels: list[str]) -> float:
    return float(np.mean([model.predict(fasttext_line(t))[0][0][9:] == y for t, y in zip(texts, labels, strict=True)]))


# fastText trains in a process of its own (a clean floating-point state, its own timing). Its training sometimes ends
# with "Encountered NaN" (a thread's loss of 0 examples, 0 / 0: common below 5 epochs on small data), so seeds retry.
_TRAIN = """
import json, sys, time
import fasttext
train, val, out, threads = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
texts, labels = zip(*(line.rstrip("\\n").split(" ", 1)[::-1] for line in open(val, encoding="utf-8", newline="\\n")))
best = None
for epoch in map(int, sys.argv[5:]):
    for seed in range(5):
        try:
            start = time.perf_counter()
            model = fasttext.train_supervised(train, epoch=epoch, thread=threads, verbose=0, seed=seed)
            seconds = time.perf_counter() - start
            break
        except RuntimeError as err:
            if "NaN" not in str(err) or seed == 4:
                raise
    accuracy = sum(model.predict(t)[0][0] == y for t, y in zip(texts, labels)) / len(texts)
    if best is None or accuracy > best["val_accuracy"]:
        best = {"val_accuracy": accuracy, "seconds": seconds, "epoch": epoch, "seed": seed}
        model.save_model(out)
print(json.dumps(best))
"""


def train_fasttext(train, val, folder: Path, epochs: list[int]) -> dict:
    """fastText supervised on the training rows (the epoch count best on validation) saved as ``model.bin``;
    its validation accuracy, seconds to train, epochs and seed."""
    for name, (texts, labels) in (("train", train), ("val", val)):
        lines = "".join(f"__label__{label} {fasttext_line(text)}\n" for text, label in zip(texts, labels, strict=True))
        (folder / f"{name}.txt").write_text(lines, encoding="utf-8")
    args = [str(folder / "train.txt"), str(folder / "val.txt"), str(folder / "model.bin"), "1", *map(str, epochs)]
    done = subprocess.run([sys.executable, "-c", _TRAIN, *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def fit_quantlight(corpus: Path, classes: str | None, folder: Path, epochs: int | None) -> QuantlightCLI:
    """``configs/text_mlp.yaml`` on the corpus, trained as a user runs it (the report left out): the CLI object."""
    args = ["--data.init_args.path", str(corpus), "--trainer.enable_progress_bar", "false"]
    args += ["--data.init_args.classes", classes] if classes else []
    args += ["--trainer.max_epochs", str(epochs)] if epochs else []
    return fit_cli("configs/text_mlp.yaml", str(folder), *args)


def per_text_us(pipelines: dict, texts: list[str], rounds: int) -> dict[str, list[float]]:
    """Microseconds per text of each pipeline's one-text call, one figure per round; pipelines take turns."""
    for call in pipelines.values():  # warm-up
        for text in texts[:32]:
            call(text)
    figures: dict[str, list[float]] = {name: [] for name in pipelines}
    for _ in range(rounds):
        for name, call in pipelines.items():
            start = time.perf_counter()
            for text in texts:
                call(text)
            figures[name].append((time.perf_counter() - start) / len(texts) * 1e6)
    return figures


def median_footprint(load: str, predict: str, path: list[str] | None, repeats: int) -> dict:
    runs = [fresh_process(load, predict, path) for _ in range(repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in ("peak_rss_bytes", "import_load_s")}


def run_corpus(name: str, args: argparse.Namespace, folder: Path) -> None:
    file, classes, title = CORPORA[name]
    corpus = MIRROR / file
    start = time.perf_counter()
    cli = fit_quantlight(corpus, classes, folder / "quantlight", 1 if args.quick else None)
    fit_s = time.perf_counter() - start
    dm = cli.datamodule
    train, val, test = (dm.split_rows(split) for split in ("train", "val", "test"))
    start = time.perf_counter()
    methods = ["fp32", *args.methods]
    ptq = PostTrainingQuantization(methods=methods, min_run_time_s=0.02 if args.quick else 0.2)
    quantization_logger = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quantization_logger.level
    quantization_logger.setLevel(logging.WARNING)  # the report's own table is not this benchmark's
    try:
        ptq.run(cli.trainer, cli.model, dm, cli.trainer.checkpoint_callback.best_model_path)
    finally:
        quantization_logger.setLevel(level)
    quantize_s = time.perf_counter() - start
    bundle_folder = Path(report_root(cli.trainer)) / "quantization" / "bundle"
    bundle = load_bundle(bundle_folder, num_threads=1, engine="onnxruntime")
    native = load_bundle(bundle_folder, engine="native") if native_core() is not None else None
    labels = bundle.predict(test.texts)
    accuracy = float(np.mean([a == b for a, b in zip(labels, test.labels, strict=True)]))
    # The recommended method's dense artifact (dense TF-IDF rows in, as before sparse inputs), on the datamodule's
    # own vectors, calibrated on the batches the report calibrated on.
    calibration = training_inputs(dm, 8)
    dense = quantize(ptq_net(cli), bundle.method, QuantizationData(calibration[0].to_dense()[:1], calibration))
    runner = OrtRunner(dense.data) if dense.suffix == ".onnx" else None
    vectors = torch.from_numpy(dm.vectorize(test.texts).toarray().astype(np.float32))
    if runner is not None:  # in the bundle's chunks: a dynamic int8 artifact quantizes activations per call
        chunks = [vectors[i : i + 1024] for i in range(0, len(vectors), 1024)]
        dense_labels = [dm.classes[i] for chunk in chunks for i in runner.logits(chunk).argmax(1).tolist()]
    else:
        with torch.inference_mode():
            dense_labels = [dm.classes[i] for i in ptq_net(cli)(vectors).argmax(1).tolist()]
    agreement = float(np.mean([a == b for a, b in zip(labels, dense_labels, strict=True)]))

    epochs = [5] if args.quick else [5, 10, 25]  # fewer than 5 epochs often ends in fastText's "Encountered NaN"
    trained = train_fasttext((train.texts, train.labels), (val.texts, val.labels), folder, epochs)
    import fasttext

    ft = fasttext.load_model(str(folder / "model.bin"))
    start = time.perf_counter()
    ft.quantize(input=str(folder / "train.txt"), qnorm=True, retrain=True, cutoff=5000, dsub=2)
    ftz_s = time.perf_counter() - start
    ft.save_model(str(folder / "model.ftz"))

    models = {
        "bin": fasttext.load_model(str(folder / "model.bin")),
        "ftz": fasttext.load_model(str(folder / "model.ftz")),
    }
    ft_accuracy = {
        kind: float(
            np.mean([m.predict(fasttext_line(t))[0][0][9:] == y for t, y in zip(test.texts, test.labels, strict=True)])
        )
        for kind, m in models.items()
    }
    texts = test.texts[: args.texts]
    pipelines = {
        "fastText .bin": lambda t, m=models["bin"]: m.predict(fasttext_line(t)),
        "fastText .ftz": lambda t, m=models["ftz"]: m.predict(fasttext_line(t)),
        "bundle": lambda t: bundle.predict([t]),
    }
    if native is not None:
        pipelines["native"] = lambda t: native.predict([t])
    latency = per_text_us(pipelines, texts, args.rounds)
    batched = {  # one call for all the timed texts (fastText's predict takes a list too), per text
        "fastText .bin": lambda ts, m=models["bin"]: m.predict([fasttext_line(t) for t in ts]),
        "fastText .ftz": lambda ts, m=models["ftz"]: m.predict([fasttext_line(t) for t in ts]),
        "bundle": bundle.predict,
    }
    if native is not None:
        batched["native"] = native.predict
    batch = {name: statistics.median(v) / len(texts) for name, v in per_text_us(batched, [texts], args.rounds).items()}
    repeats = 1 if args.quick else 3
    example = texts[0]
    footprints = {
        kind: median_footprint(
            f"import fasttext\nmodel = fasttext.load_model({str(folder / f'model.{kind}')!r})",
            f"model.predict({fasttext_line(example)!r})",
            None,
            repeats,
        )
        for kind in models
    }
    runs = [bundle_footprint(bundle_folder, example) for _ in range(repeats)]
    footprints["bundle"] = {k: statistics.median(r[k] for r in runs) for k in ("peak_rss_bytes", "import_load_s")}
    if native is not None:  # the runtime package alone: no numpy, no ONNX Runtime
        load = f"from runtime import load_bundle\nbundle = load_bundle({str(bundle_folder)!r}, engine='native')"
        footprints["native"] = median_footprint(load, f"bundle.predict([{example!r}])", [str(RUNTIME_ROOT)], repeats)
        reference = [  # the artifact one text a call, as the native core computes it
            label for i in range(len(test.texts)) for label in bundle.predict(test.texts[i : i + 1])
        ]
        native_agreement = float(np.mean([a == b for a, b in zip(native.predict(test.texts), reference, strict=True)]))
    sizes = {kind: (folder / f"model.{kind}").stat().st_size for kind in models}
    bundle_bytes = sum(p.stat().st_size for p in bundle_folder.iterdir() if p.is_file() and p.name != NATIVE_FILE)
    native_bytes = (bundle_folder / NATIVE_FILE).stat().st_size if native is not None else 0
    artifact_bytes = next(p.stat().st_size for p in bundle_folder.iterdir() if p.suffix in (".onnx", ".pt"))
    med = {name: statistics.median(v) for name, v in latency.items()}

    columns = ["bin", "ftz", "bundle", *(["native"] if native is not None else [])]
    print(f"\n## {title}: {len(test.texts):,} test texts, 1 thread, measured side by side\n")
    head = f"| | fastText `.bin` | fastText `.ftz` | Quantlight bundle (`{bundle.method}`), ONNX Runtime |"
    print(head + (" native core |" if native is not None else ""))
    print("|---|---|---|---|" + ("---|" if native is not None else ""))
    print(
        f"| test accuracy | {ft_accuracy['bin'] * 100:.2f} % | {ft_accuracy['ftz'] * 100:.2f} % | "
        f"{accuracy * 100:.2f} % (agreement with its dense artifact {agreement * 100:.2f} %) |"
    )
    print(
        f"| training | {trained['seconds']:.1f} s ({trained['epoch']} epochs, validation "
        f"{trained['val_accuracy'] * 100:.1f} %) | + {ftz_s:.1f} s quantize | "
        f"{fit_s:.1f} s fit + {quantize_s:.1f} s report and bundle ({len(methods)} methods) |"
    )
    print(
        f"| file | {_size(sizes['bin'])} | {_size(sizes['ftz'])} | {_size(bundle_bytes)} "
        f"(artifact {_size(artifact_bytes)}) |"
        + (f" + {_size(native_bytes)} model.qlm |" if native is not None else "")
    )
    cells = [f"{med[n]:.1f} us ({med[n] / med['fastText .bin']:.2f}x)" for n in pipelines]
    print(f"| predict one raw text (median of {args.rounds} rounds; vs .bin) | " + " | ".join(cells) + " |")
    cells = [f"{batch[n]:.1f} us ({batch[n] / batch['fastText .bin']:.2f}x)" for n in batched]
    print(f"| predict {len(texts)} raw texts in one call, per text | " + " | ".join(cells) + " |")
    cells = [f"{footprints[k]['peak_rss_bytes'] / 2**20:.0f} MB" for k in columns]
    print("| process peak RSS (import, load, predict) | " + " | ".join(cells) + " |")
    cells = [f"{footprints[k]['import_load_s']:.3f} s" for k in columns]
    print("| import + load | " + " | ".join(cells) + " |")
    if native is not None:
        print(f"| native labels equal to the artifact's (one text a call) | | | | {native_agreement * 100:.2f} % |")


def ptq_net(cli: QuantlightCLI) -> torch.nn.Module:
    """The best checkpoint's plain fp32 net, in eval mode (what the report quantized)."""
    from callbacks.post_training_quantization import load_net

    return load_net(cli.model, cli.trainer.checkpoint_callback.best_model_path)


def _size(size_bytes: int) -> str:
    return f"{size_bytes / 2**20:.2f} MB" if size_bytes >= 2**20 else f"{size_bytes / 1024:.0f} KB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpora", nargs="+", choices=list(CORPORA), default=list(CORPORA))
    parser.add_argument("--methods", nargs="+", default=["onnx_static_int8", "onnx_dynamic_int8", "onnx_int4"])
    parser.add_argument("--texts", type=int, default=512, help="test texts timed per round")
    parser.add_argument("--rounds", type=int, default=7, help="timing rounds (the median is shown)")
    parser.add_argument(
        "--quick", action="store_true", help="the first corpus, one epoch each, one method, 64 texts, 3 rounds"
    )
    args = parser.parse_args()
    try:
        import fasttext  # noqa: F401
    except ImportError:
        parser.error("fastText is not installed: pip install '.[bench]' (make bench installs it).")
    missing = [str(MIRROR / CORPORA[name][0]) for name in args.corpora if not (MIRROR / CORPORA[name][0]).is_file()]
    if missing:
        parser.error(f"{missing[0]} not found: set QUANTLIGHT_MIRROR to the offline data mirror.")
    if args.quick:
        args.corpora, args.methods, args.texts, args.rounds = args.corpora[:1], args.methods[:1], 64, 3
    torch.set_num_threads(1)
    print(f"Measured on: {describe(machine_info())}")
    for name in args.corpora:
        with tempfile.TemporaryDirectory(prefix=f"fasttext-{name}-") as folder:
            run_corpus(name, args, Path(folder))


if __name__ == "__main__":
    main()
