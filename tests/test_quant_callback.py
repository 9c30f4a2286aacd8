"""PostTrainingQuantization in a real fit, and ``cli.py quantize``, on tiny synthetic MNIST."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import onnxruntime
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import PostTrainingQuantization
from callbacks.post_training_quantization import load_net
from cli import main
from datamodules import MNISTDataModule
from errors import CheckpointError, ConfigError
from modules import LogisticRegression
from quantization import METHODS, default_methods, load_artifact
from tests.helpers import checkpoint_callback_args, cli_error, mnist_args

ROW_KEYS = {"method", "size_bytes", "size_ratio", "accuracy", "accuracy_delta", "agreement", "latency_ms", "speedup"}
ROW_KEYS |= {"threads", "slower_than_fp32", "artifact", "memory_bytes", "memory_ratio", "sparse_input"}
FAST = {"latency_batch_sizes": [1, 8], "min_run_time_s": 0.005, "calibration_batches": 2}


class StateAtFitEnd(Callback):
    """Snapshot of the live module's weights just before the quantization callback runs."""

    def on_fit_end(self, trainer, pl_module):
        self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}


def datamodule(root: Path) -> MNISTDataModule:
    return MNISTDataModule(data_dir=str(root), download=False, val_size=100, batch_size=64)


def fit(root: Path, out: Path, *callbacks: Callback, **trainer_args) -> tuple[Trainer, LogisticRegression]:
    model = LogisticRegression(optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    trainer = Trainer(
        accelerator="cpu",
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=list(callbacks),
        **trainer_args,
    )
    trainer.fit(model, datamodule=datamodule(root))
    return trainer, model


@pytest.mark.slow
def test_fit_writes_report_artifacts_and_tensorboard(mnist_root, tmp_path):
    snapshot = StateAtFitEnd()
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), monitor="val/acc", mode="max", filename="best")
    trainer, model = fit(
        mnist_root,
        tmp_path,
        snapshot,
        PostTrainingQuantization(**FAST),
        checkpoint,
        logger=TensorBoardLogger(tmp_path, name="run"),
        max_epochs=2,
        limit_train_batches=3,
    )
    log_dir = Path(trainer.logger.log_dir)
    report = json.loads((log_dir / "quantization" / "report.json").read_text())
    rows = report["methods"]
    assert [row["method"] for row in rows] == ["fp32", *(name for name in default_methods() if name != "fp32")]
    assert report["machine"]["cpu"] and set(report["machine"]["isa"]) >= {"avx2", "avx512_vnni", "amx_int8"}
    assert report["machine"]["versions"]["onnxruntime"] == onnxruntime.__version__
    assert all(set(row) >= ROW_KEYS for row in rows)
    assert all(set(row["latency_ms"]) == {"1", "8"} for row in rows)
    assert "saturated_fraction" in next(row for row in rows if row["method"] == "fixed_scale_int8")
    held = {row["method"]: row["memory_bytes"] for row in rows}
    assert held["int4_weight_only"] == held["fp32"] == 4 * (784 * 10 + 10)  # dequantized at load: fp32's bytes
    assert held["onnx_int4"] < held["onnx_static_int8"] < held["fp32"] and not any(r["sparse_input"] for r in rows)
    markdown = (log_dir / "quantization" / "report.md").read_text()
    assert markdown.startswith("# Quantization report") and f"Measured on: {report['machine']['cpu']}" in markdown

    # The live module is untouched, and fp32 is the best checkpoint, as `trainer.test` sees it.
    assert all(torch.equal(snapshot.state[k], v) for k, v in model.state_dict().items())
    test_acc = trainer.test(model, datamodule=datamodule(mnist_root), ckpt_path="best", verbose=False)[0]["test/acc"]
    assert rows[0]["accuracy"] == pytest.approx(test_acc, abs=1e-6)

    # Each artifact loads back (weights only / ONNX) and predicts what was measured.
    x = torch.cat([x for x, _ in trainer.datamodule.test_dataloader()])
    fp32 = load_artifact(log_dir / "quantization" / "fp32.pt").logits(x).argmax(1)
    for row in rows:
        predictions = load_artifact(log_dir / "quantization" / row["artifact"]).logits(x).argmax(1)
        assert (predictions == fp32).float().mean().item() == pytest.approx(row["agreement"])

    events = EventAccumulator(str(log_dir), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    events.Reload()
    scalars = set(events.Tags()["scalars"])
    assert not any(tag.startswith("quant/fp32/") for tag in scalars)  # no chart per row and measure
    assert {"job/fit_s", "job/evaluate_s", "job/latency_s", "job/write_s", "job/tensorboard_s"} <= scalars  # seconds
    assert {"quant/report/text_summary", "job/stages/text_summary"} <= set(events.Tags()["tensors"])
    assert "quant/comparison" in events.Tags()["images"]
    for method in default_methods():  # one run per row: a chart per measure holds every row
        hparams = EventAccumulator(str(log_dir / "quant_hparams" / method))
        hparams.Reload()
        assert "_hparams_/session_start_info" in hparams.PluginTagToContent("hparams")
        measures = ("size_bytes", "size_ratio", "memory_bytes", "accuracy", "latency_ms_bs1", "speedup_bs1")
        assert {f"quant/{tag}" for tag in measures} <= set(hparams.Tags()["scalars"])
    assert list(report["job"]["stages"])[:2] == ["fit", "data"] and report["job"]["stages"]["latency"] > 0
    assert list(report["job"]["stages"])[-1] == "tensorboard"  # logged before the report that holds its seconds
    # When the best checkpoint was saved: its epoch (1-based) and the seconds into the fit, its write included.
    best = report["job"]["fit_to_best"]
    assert best["epoch"] == torch.load(checkpoint.best_model_path, weights_only=True)["epoch"] + 1
    assert 0 < best["seconds"] <= report["job"]["stages"]["fit"]


def test_fast_dev_run_falls_back_to_final_weights(mnist_root, tmp_path):
    snapshot = StateAtFitEnd()
    callback = PostTrainingQuantization(methods=["dynamic_int8", "onnx_static_int8"], **FAST)
    with pytest.warns(UserWarning, match=r"No best checkpoint \(fast_dev_run saves none\)"):
        _, model = fit(
            mnist_root, tmp_path, snapshot, callback, fast_dev_run=True, logger=False, default_root_dir=tmp_path
        )
    rows = json.loads((tmp_path / "quantization" / "report.json").read_text())["methods"]
    assert [row["method"] for row in rows] == ["fp32", "dynamic_int8", "onnx_static_int8"]
    assert all(torch.equal(snapshot.state[k], v) for k, v in model.state_dict().items())


@pytest.mark.slow
def test_quantize_subcommand_reports_on_a_checkpoint(mnist_root, tmp_path):
    ckpt_args = checkpoint_callback_args(tmp_path)
    main(
        ["fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1", "--test_after_fit", "false", *ckpt_args)]
    )
    quant_args = [
        "--trainer.callbacks+=callbacks.PostTrainingQuantization",
        "--trainer.callbacks.methods=[dynamic_int8, onnx_dynamic_int8]",
        "--trainer.callbacks.latency_batch_sizes=[1]",
        "--trainer.callbacks.min_run_time_s=0.005",
    ]
    best = tmp_path / "ckpt" / "best.ckpt"
    main(["quantize", *mnist_args(mnist_root, tmp_path, *quant_args), "--ckpt_path", str(best)])
    (report,) = tmp_path.glob("mnist_logistic/version_*/quantization/report.json")
    rows = json.loads(report.read_text())["methods"]
    assert [row["method"] for row in rows] == ["fp32", "dynamic_int8", "onnx_dynamic_int8"]
    assert rows[0]["accuracy"] > 0.9  # the synthetic digits are easy
    assert all(row["accuracy_delta"] > -5 for row in rows)


def test_quantize_without_checkpoint_is_one_line_error(mnist_root, tmp_path, capsys):
    err = cli_error(capsys, "quantize", *mnist_args(mnist_root, tmp_path))
    assert err.splitlines()[-1].startswith("error: `quantize` needs a checkpoint")


def test_quantize_unreadable_checkpoint_is_one_line_error(mnist_root, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"not a checkpoint")
    err = cli_error(capsys, "quantize", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(bad))
    assert err.splitlines()[-1].startswith(f"error: Checkpoint {bad} cannot be loaded safely")


def test_unknown_method_in_config_fails_before_training(mnist_root, tmp_path, capsys):
    args = ["--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[int3]"]
    assert "int3" in cli_error(capsys, "fit", *mnist_args(mnist_root, tmp_path, *args))
    assert not list(tmp_path.glob("mnist_logistic/version_*/checkpoints"))


class LayerNormNet(torch.nn.Module):
    """A model the torch methods can quantize (its Linear layers) but ``refuses_layernorm`` cannot."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(784, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 10))


def test_model_a_method_cannot_quantize_is_refused_at_setup(mnist_root, tmp_path, monkeypatch):
    """A method that refuses a layer stops fit at setup, in one line naming the layer and the method."""
    method = METHODS["weight_only_int8"]
    refusing = dataclasses.replace(
        method,
        refuses=lambda name, module: (
            f"{type(module).__name__} at `{name}`" if isinstance(module, torch.nn.LayerNorm) else None
        ),
    )
    monkeypatch.setitem(METHODS, "weight_only_int8", refusing)
    model = LogisticRegression(optimizer=lambda params: torch.optim.SGD(params, lr=0.1))
    model.net = LayerNormNet().net
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, max_epochs=1)
    trainer.callbacks.append(PostTrainingQuantization(methods=["weight_only_int8"]))
    with pytest.raises(
        ConfigError, match=r"^Method `weight_only_int8` cannot quantize this model: LayerNorm at `1`\. Remove"
    ):
        trainer.fit(model, datamodule=datamodule(mnist_root))
    assert trainer.global_step == 0  # refused before the first step


def test_checkpoint_of_another_model_is_rejected(tmp_path):
    ckpt = tmp_path / "wide.ckpt"
    torch.save({"state_dict": LogisticRegression(input_dim=100, num_classes=10).state_dict()}, ckpt)
    model = LogisticRegression(input_dim=784, num_classes=10)
    with pytest.raises(CheckpointError, match=r"does not fit the data: net\.weight has shape \(10, 100\)"):
        load_net(model, str(ckpt))
