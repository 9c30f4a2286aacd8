"""PostTrainingQuantization: after fit, quantize the best checkpoint with every configured method.

The live ``pl_module`` is never touched: the checkpoint's weights go into a copy of its plain
``net``, and each method quantizes a copy of that. Results go to ``<log_dir>/quantization/``
(report, artifacts) and to the run's TensorBoard.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from itertools import islice
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningDataModule, LightningModule, Trainer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from callbacks.quant_artifacts import save_artifact
from callbacks.quant_measure import Batch, MeasureSettings, dense, measure_methods
from callbacks.quant_methods import METHODS, NEEDS_CALIBRATION, check_methods
from callbacks.quant_onnx import WEIGHT_TYPES
from callbacks.quant_report import log_tensorboard, report_markdown, write_report
from callbacks.quant_torch import QuantOptions
from errors import DataError
from modules.checkpoints import check_checkpoint_matches, read_checkpoint

# The registry's names, spelled out so LightningCLI rejects a typo while parsing the config.
MethodName = Literal[
    "fp32",
    "dynamic_int8",
    "fp16",
    "bf16",
    "fixed_scale_int8",
    "weight_only_int8",
    "onnx_dynamic_int8",
    "onnx_static_int8",
]


class PostTrainingQuantization(Callback):
    """Quantize the best checkpoint after ``fit`` and compare every method with fp32.

    Args:
        methods: Registry names of the methods to run (fp32 is always measured); ``None``: all.
        latency_batch_sizes: Batch sizes whose latency is measured.
        num_threads: torch and ONNX Runtime threads while timing; reported with the figures.
        min_run_time_s: Seconds of timed calls per method and batch size.
        calibration_batches: Training batches that static quantization calibrates on.
        fixed_scale_bits: ``fixed_scale_int8`` stores ``round(w * 2**bits)`` clamped to int8.
        onnx_weights: Weights of the ONNX int8 methods. ``int7`` (default): int8 values in [-64, 64],
            exact on every x86 CPU. ``uint8``: u8 x u8 kernels, exact everywhere, slower at large
            batches. ``int8``: full range, exact only on CPUs with VNNI/AMX (int16 pair sums
            saturate on AVX2 without VNNI, which the report flags).
        onnx_per_channel: One weight scale per output channel (recovers the precision of 7-bit weights).
    """

    def __init__(
        self,
        methods: Sequence[MethodName] | None = None,
        latency_batch_sizes: Sequence[int] = (1, 256),
        num_threads: int = 1,
        min_run_time_s: float = 0.2,
        calibration_batches: int = 8,
        fixed_scale_bits: int = 7,
        onnx_weights: Literal["int7", "uint8", "int8"] = "int7",
        onnx_per_channel: bool = True,
    ) -> None:
        self.methods = check_methods(list(METHODS) if methods is None else methods)
        if not latency_batch_sizes or min(latency_batch_sizes) < 1:
            raise ValueError(f"Expected `latency_batch_sizes` to be batch sizes >= 1, got {latency_batch_sizes}.")
        if num_threads < 1:
            raise ValueError(f"Expected `num_threads` >= 1, got {num_threads}.")
        if min_run_time_s <= 0:
            raise ValueError(f"Expected `min_run_time_s` > 0, got {min_run_time_s}.")
        if calibration_batches < 1:
            raise ValueError(f"Expected `calibration_batches` >= 1, got {calibration_batches}.")
        if not 0 <= fixed_scale_bits <= 14:
            raise ValueError(f"Expected `fixed_scale_bits` in [0, 14], got {fixed_scale_bits}.")
        if onnx_weights not in WEIGHT_TYPES:
            raise ValueError(f"Expected `onnx_weights` to be one of ({', '.join(WEIGHT_TYPES)}), got {onnx_weights!r}.")
        self.settings = MeasureSettings(tuple(latency_batch_sizes), num_threads, min_run_time_s)
        self.calibration_batches = calibration_batches
        self.fixed_scale_bits = fixed_scale_bits
        self.onnx_weights = onnx_weights
        self.onnx_per_channel = onnx_per_channel

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.run(trainer, pl_module, trainer.datamodule, best_checkpoint(trainer))
        trainer.strategy.barrier("post_training_quantization")  # other ranks wait for the report

    def run(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        datamodule: LightningDataModule | None,
        ckpt_path: str | None,
    ) -> list[dict[str, Any]]:
        """Report on ``ckpt_path`` (``None``: ``pl_module``'s current weights), logging to ``trainer``'s logger."""
        if datamodule is None:
            raise DataError("PostTrainingQuantization needs a datamodule (its test split); pass `datamodule=`.")
        start = time.perf_counter()
        net = load_net(pl_module, ckpt_path)
        calibration = []
        if NEEDS_CALIBRATION & set(self.methods):
            calibration = training_inputs(datamodule, self.calibration_batches)
        options = QuantOptions(
            fixed_scale_bits=self.fixed_scale_bits,
            calibration=calibration,
            onnx_weights=self.onnx_weights,
            onnx_per_channel=self.onnx_per_channel,
        )
        folder = Path(report_root(trainer)) / "quantization"
        rows = quantization_report(
            net,
            self.methods,
            test_batches(datamodule),
            folder,
            self.settings,
            options,
            tensorboard(trainer),
            trainer.global_step,
        )
        seconds = time.perf_counter() - start
        rank_zero_info(
            f"Quantization report ({len(rows)} methods, {seconds:.1f} s) in {folder}:\n{report_markdown(rows)}"
        )
        return rows


def quantization_report(
    net: nn.Module,
    methods: Sequence[str],
    batches: Sequence[Batch],
    folder: Path,
    settings: MeasureSettings,
    options: QuantOptions,
    writer: SummaryWriter | None = None,
    step: int = 0,
) -> list[dict[str, Any]]:
    """Measure every method on ``net``; write artifacts, ``report.json`` and ``report.md`` to ``folder``."""
    rows, artifacts = measure_methods(net, methods, batches, settings, options)
    for artifact in artifacts:
        save_artifact(artifact, folder)
    write_report(rows, folder)
    if writer is not None:
        log_tensorboard(writer, rows, step)
    return rows


def best_checkpoint(trainer: Trainer) -> str | None:
    """``ModelCheckpoint.best_model_path``, or ``None`` (with a warning) when no checkpoint was saved."""
    callback = trainer.checkpoint_callback
    if callback is not None and callback.best_model_path:
        return callback.best_model_path
    reason = "fast_dev_run saves none" if trainer.fast_dev_run else "no ModelCheckpoint saved one"
    rank_zero_warn(f"No best checkpoint ({reason}): quantizing the final weights of this fit instead.")
    return None


def load_net(pl_module: LightningModule, ckpt_path: str | None) -> nn.Module:
    """A fp32 CPU copy of ``pl_module.net`` in eval mode, with the checkpoint's weights when given.

    Raises:
        CheckpointError: The file is missing, unsafe or corrupted, or belongs to another model.
    """
    net = copy.deepcopy(pl_module.net)
    if ckpt_path is not None:
        checkpoint = read_checkpoint(ckpt_path)
        check_checkpoint_matches(ckpt_path, checkpoint, pl_module)
        net.load_state_dict(
            {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}
        )
    return net.cpu().float().eval()


def test_batches(datamodule: LightningDataModule) -> list[Batch]:
    """The datamodule's test split as CPU batches (the same inputs for every method)."""
    datamodule.setup("test")
    return [(x.cpu(), y.cpu()) for x, y in datamodule.test_dataloader()]


def training_inputs(datamodule: LightningDataModule, num_batches: int) -> list[torch.Tensor]:
    """The inputs of the first ``num_batches`` training batches, for calibration."""
    datamodule.setup("fit")
    return [dense(x.cpu()) for x, _ in islice(datamodule.train_dataloader(), num_batches)]


def report_root(trainer: Trainer) -> str:
    """The run's log dir (TensorBoard version folder), else the logger's save dir, else ``default_root_dir``."""
    logger = trainer.logger
    return getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or trainer.default_root_dir


def tensorboard(trainer: Trainer) -> SummaryWriter | None:
    """The run's ``SummaryWriter`` when it logs to TensorBoard."""
    logger = trainer.logger
    return logger.experiment if isinstance(logger, TensorBoardLogger) else None
