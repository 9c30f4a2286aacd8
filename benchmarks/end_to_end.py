"""Raw tweet in, label out: today's checkpoint path vs deployable bundles of quantized artifacts, side by side.

    python benchmarks/end_to_end.py [--ckpt runs/text_mlp/version_0/checkpoints/best.ckpt]
        [--corpus ../shared/data/sentiment-tweets/tweets.csv] [--methods onnx_static_int8 onnx_dynamic_int8 onnx_int4]
        [--batch-sizes 1 256] [--num-threads 1] [--min-run-time-s 1.0] [--out <folder to keep the bundles in>] [--quick]

The fp32 row is what ``predict`` with the checkpoint computes per batch: scikit-learn's ``transform``,
the sparse COO batch, the torch fp32 MLP (sparse first layer) and the softmax (DataLoader and Lightning's
loop left out). Each bundle row is ``runtime.load_bundle(...).predict``: the plain-data featurizer (term ids
and weights), the artifact as the quantization report measured it (its first layer gathers the terms' rows),
the largest logit. The checkpoint's own
split, vectorizer and calibration (its first training batches, as the PostTrainingQuantization callback
calibrates). Per example, median and p90 over batches of distinct test tweets
(``quantization.ship.bundle.end_to_end_latency``); "features" is the share of end to end spent featurizing.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere: `python benchmarks/...`

from benchmarks.corpora import MIRROR
from benchmarks.timing import fit_checkpoint
from callbacks.post_training_quantization import training_inputs
from datamodules.text import TextDataModule
from datamodules.text_vectorizer import csr_to_torch
from modules import MLP
from quantization import QuantizationData, quantize
from quantization.measure.end_to_end import end_to_end_latency
from quantization.measure.machine import describe, machine_info
from quantization.ship.bundle import load_bundle, write_bundle
from storage.checkpoints import load_net_weights, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
TWEETS = MIRROR / "sentiment-tweets" / "tweets.csv"


def train_tweets(folder: str, quick: bool, corpus: str | None = None) -> Path:
    """The tweets recipe's best checkpoint, trained as a user runs it (the report left out; one epoch if
    ``quick``) into ``folder``, on ``corpus`` (default: the mirror's tweets)."""
    overrides = ["--data.init_args.path", corpus or str(TWEETS), "--data.init_args.classes", "[negative,positive]"]
    overrides += ["--trainer.enable_progress_bar", "false", *(["--trainer.max_epochs", "1"] if quick else [])]
    return fit_checkpoint("configs/text_mlp.yaml", folder, *overrides)


class CheckpointPipeline:
    """Today's ``predict`` arithmetic: scikit-learn TF-IDF -> sparse COO batch -> torch fp32 MLP -> softmax."""

    def __init__(self, datamodule: TextDataModule, net: torch.nn.Module) -> None:
        self.vectorize = datamodule.vectorize
        self.classes = datamodule.classes
        self.net = net

    def features(self, texts: list[str]) -> torch.Tensor:
        return csr_to_torch(self.vectorize(texts))  # (B, 5000) sparse, as SparseBatchDataset serves it

    def run(self, features: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.net(features).softmax(dim=-1)  # (B, num_classes), as predict_step returns

    def predict(self, texts: list[str]) -> list[str]:
        return [self.classes[i] for i in self.run(self.features(texts)).argmax(dim=1).tolist()]


def load_text_run(ckpt: Path, corpus: str | None) -> tuple[TextDataModule, torch.nn.Module]:
    """The checkpoint's datamodule (same split, its fitted vectorizer) and its fp32 MLP body, in eval mode."""
    checkpoint = read_checkpoint(ckpt)
    data = {k: v for k, v in checkpoint["datamodule_hyper_parameters"].items() if not k.startswith("_")}
    data |= {"vectorizer_checkpoint": str(ckpt)} | ({"path": corpus} if corpus else {})
    datamodule = TextDataModule(**data)
    hparams = checkpoint["hyper_parameters"]
    model = MLP(**{key: hparams[key] for key in ("input_dim", "hidden_sizes", "num_classes", "dropout")})
    model.net.load_state_dict(load_net_weights(ckpt, model))
    return datamodule, model.net.eval()


def match_rate(labels: list[str], truth: list[str]) -> float:
    return float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, default=REPO / "runs/text_mlp/version_0/checkpoints/best.ckpt")
    parser.add_argument("--corpus", default=None, help="the training corpus, if not where the checkpoint says")
    parser.add_argument("--methods", nargs="+", default=["onnx_static_int8", "onnx_dynamic_int8", "onnx_int4"])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 256], help="examples per call")
    parser.add_argument("--num-threads", type=int, default=1, help="torch and ONNX Runtime intra-op threads")
    parser.add_argument("--min-run-time-s", type=float, default=1.0, help="timed seconds per pipeline and batch size")
    parser.add_argument("--out", type=Path, default=None, help="keep the bundles here (default: a temporary folder)")
    parser.add_argument(
        "--quick", action="store_true", help="0.01 s of timed calls per figure, batch 1, 512 test texts"
    )
    args = parser.parse_args()
    if args.quick:
        args.min_run_time_s, args.batch_sizes = 0.01, [1]
    with tempfile.TemporaryDirectory(prefix="bundles-") as scratch:
        if not args.ckpt.is_file():  # train the tweets recipe now (one epoch with --quick)
            print(f"{args.ckpt} not found: training configs/text_mlp.yaml on {args.corpus or TWEETS} first")
            args.ckpt = train_tweets(scratch, args.quick, args.corpus)
        run(args, args.out or Path(scratch))


def run(args: argparse.Namespace, folder: Path) -> None:
    torch.set_num_threads(args.num_threads)
    print(f"Measured on: {describe(machine_info())}")

    datamodule, net = load_text_run(args.ckpt, args.corpus)
    test = datamodule.split_rows("test")
    if args.quick:
        test = test.subset(list(range(min(512, len(test.texts)))))
    calibration = training_inputs(datamodule, 8)
    # As for text: the report's calibration batches (sparse until read), term-bag artifacts.
    data = QuantizationData(example=calibration[0].to_dense()[:1], calibration=calibration, sparse_input=True)
    pipelines = {"fp32 checkpoint (scikit-learn + torch)": CheckpointPipeline(datamodule, net)}
    sizes = {next(iter(pipelines)): sum(t.numel() * t.element_size() for t in net.state_dict().values())}
    for method in args.methods:
        artifact = quantize(net, method, data)
        path = write_bundle(folder / method, artifact, net, datamodule.preprocessing(), datamodule.classes, {})
        pipelines[f"bundle: {method}"] = load_bundle(path, num_threads=args.num_threads, engine="onnxruntime")
        sizes[f"bundle: {method}"] = sum(p.stat().st_size for p in path.iterdir())

    # Every bundle predicts exactly what its artifact predicts on scikit-learn's vectors, batch for batch (ONNX
    # Runtime's dynamic int8 quantizes activations per batch: a label may depend on the rest of its batch).
    batches = [slice(i, i + 256) for i in range(0, len(test.texts), 256)]
    dense = torch.from_numpy(datamodule.vectorize(test.texts).toarray().astype(np.float32))  # (N, 5000)
    labels = {name: [y for b in batches for y in p.predict(test.texts[b])] for name, p in pipelines.items()}
    alone = {name: [y for t in test.texts for y in p.predict([t])] for name, p in pipelines.items()}
    for name, pipeline in list(pipelines.items())[1:]:
        own = [pipeline.classes[i] for b in batches for i in pipeline.run(dense[b].numpy()).argmax(1).tolist()]
        if labels[name] != own:
            raise RuntimeError(f"{name}: the bundle's labels differ from its artifact's on scikit-learn's vectors.")

    start = time.perf_counter()
    results = end_to_end_latency(pipelines, test.texts, args.batch_sizes, args.num_threads, args.min_run_time_s)
    seconds = time.perf_counter() - start
    print(
        f"\n## Tweets MLP ({args.ckpt}), {len(test.texts)} test tweets, {args.num_threads} thread(s), "
        f"latency per example in us, measured side by side in {seconds:.0f} s\n"
    )
    fp32 = labels[next(iter(pipelines))]
    header = ["pipeline", "files", "accuracy", "agreement", "batch 1 = batch 256"]
    for n in args.batch_sizes:
        header += [f"batch {n}: end to end median / p90", "features (share)", "model only", "speedup"]
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    baseline = results[next(iter(pipelines))]
    for name, result in results.items():
        cells = [name, f"{sizes[name] / 1e6:.2f} MB", f"{match_rate(labels[name], test.labels) * 100:.2f} %"]
        cells += [f"{match_rate(labels[name], fp32) * 100:.1f} %"]
        cells += [f"{match_rate(alone[name], labels[name]) * 100:.2f} %"]
        for n in map(str, args.batch_sizes):
            e2e, feats, model = (result[n][f"{k}_ms"] for k in ("end_to_end", "features", "model"))
            cells += [f"{e2e['median'] * 1e3:.0f} / {e2e['p90'] * 1e3:.0f}"]
            cells += [f"{feats['median'] * 1e3:.0f} ({result[n]['features_share'] * 100:.0f} %)"]
            cells += [f"{model['median'] * 1e3:.0f}", f"{baseline[n]['end_to_end_ms']['median'] / e2e['median']:.2f}x"]
        print("| " + " | ".join(cells) + " |")
    print("\nfiles: a bundle's whole folder (artifact, preprocessing.json, model card); fp32: the net's weights.")


if __name__ == "__main__":
    main()
