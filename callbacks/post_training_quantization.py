"""PostTrainingQuantization: after fit, quantize the best checkpoint with every configured method.

Lightning glue only: it checks at ``setup`` that the model can be quantized (before training),
runs the engine (``quantization.quantization_report``) on rank zero after fit while the other
ranks wait, and logs to the run's TensorBoard. The live ``pl_module`` is never touched: the
checkpoint's weights go into a copy of its plain ``net``.
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
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.tensorboard import SummaryWriter

from callbacks.best_checkpoint import BestSaved, best_checkpoint
from callbacks.deployment import deployable, ship
from callbacks.prune_settings import PruneSettings
from callbacks.quantization_aware_training import QATSettings, fine_tune_qat
from callbacks.vocabulary_pruning import check_prunable, prunable, pruned_candidates
from errors import ConfigError, DataError
from quantization import BASELINE, METHODS, QuantizationData, check_methods, check_quantizable, default_methods
from quantization.artifacts.onnx_runtime import dense
from quantization.candidates.qat import check_qat_method
from quantization.decide.decision import Budget
from quantization.decide.recommend import check_max_bytes, check_objective
from quantization.measure.rows import Batch, Candidate, MeasureSettings
from quantization.pipeline import quantization_report
from quantization.registry import dense_only_methods
from quantization.ship.report import log_job, log_tensorboard, report_markdown, write_report
from quantization.stages import Stages
from storage.checkpoints import load_net_weights

# The registry's names, so LightningCLI rejects a typo while parsing the config.
MethodName = Literal[tuple(METHODS)]


class PostTrainingQuantization(Callback):
    """Quantize the best checkpoint after ``fit`` and compare every method with fp32.

    Args:
        methods: Registry names of the methods to run (fp32 is always measured); ``None``: all.
        settings: Per-method settings, e.g. ``{"fixed_scale_int8": {"bits": 6}}``; each method's
            defaults otherwise (see ``quantization/methods/<name>.py``).
        latency_batch_sizes: Batch sizes whose latency is measured.
        num_threads: torch and ONNX Runtime threads while timing; reported with the figures.
        min_run_time_s: Seconds of timed calls per method and batch size.
        calibration_batches: Training batches that static quantization calibrates on.
        qat: Methods to also fine-tune for with quantization-aware training, each with its
            ``QATSettings`` (``epochs``, ``lr_scale``), e.g. ``{"int3_weight_only": {"epochs": 10}}``;
            measured as the row ``<method>+qat`` beside the method's own (added when not in ``methods``).
        max_accuracy_drop: The accuracy budget: points of *validation* accuracy a method may lose against
            fp32 to be recommended (the test split stays the final figure). A method over it gets a
            per-layer sensitivity table and, when keeping its most sensitive layers in fp32 brings it
            within budget, a ``<method>+fallback`` row.
        objective: What the recommendation optimizes within the budget: ``size`` (the bytes a bundle ships:
            artifact + preprocessing), ``memory`` (bytes the loaded model holds), ``accuracy`` (validation accuracy:
            the most accurate row, whatever the budget), ``latency_bs1`` or ``latency_bs<N>`` (one of
            ``latency_batch_sizes``); ``None``: ``accuracy`` with ``max_bytes``, else latency at the smallest batch.
        sensitivity: Configured methods (not fp32) to report per-layer sensitivity for even when within budget.
        max_bytes: The most bytes the recommended row may ship (its bundle's artifact + ``preprocessing.json``), e.g.
            ``460800`` for 450 KB: with the default objective, the most accurate row that fits.
        prune: Text runs only: smaller models that keep the vocabulary's most important terms (and fewer hidden
            units), each fine-tuned briefly and measured with ``prune.methods`` as rows
            ``<method>+prune<terms>x<units>`` (``callbacks.prune_settings.PruneSettings``), e.g.
            ``{sizes: [{terms: 2000, hidden: 32}], methods: [onnx_int4], epochs: 4}``; ``None``: none.
    """

    def __init__(
        self,
        methods: Sequence[MethodName] | None = None,
        settings: dict[str, dict[str, Any]] | None = None,
        latency_batch_sizes: Sequence[int] = (1, 256),
        num_threads: int = 1,
        min_run_time_s: float = 0.2,
        calibration_batches: int = 8,
        qat: dict[str, dict[str, Any]] | None = None,
        max_accuracy_drop: float = 0.5,
        objective: str | None = None,
        sensitivity: Sequence[MethodName] = (),
        prune: dict[str, Any] | None = None,
        max_bytes: int | None = None,
    ) -> None:
        qat = qat or {}
        for name in qat:
            check_qat_method(name)
        self.prune = PruneSettings.from_values(prune)
        names = check_methods([*(default_methods() if methods is None else methods), *qat])
        unknown = sorted(set(settings or {}) - set(names) - set(self.prune.methods if self.prune.sizes else ()))
        if unknown:
            raise ValueError(
                f"Expected `settings` keys among the configured methods ({', '.join(names)}), got {unknown[0]!r}."
            )
        if not latency_batch_sizes or min(latency_batch_sizes) < 1:
            raise ValueError(f"Expected `latency_batch_sizes` to be batch sizes >= 1, got {latency_batch_sizes}.")
        if num_threads < 1:
            raise ValueError(f"Expected `num_threads` >= 1, got {num_threads}.")
        if min_run_time_s <= 0:
            raise ValueError(f"Expected `min_run_time_s` > 0, got {min_run_time_s}.")
        if calibration_batches < 1:
            raise ValueError(f"Expected `calibration_batches` >= 1, got {calibration_batches}.")
        self.methods = {name: METHODS[name].make_settings((settings or {}).get(name)) for name in names}
        self.methods_named = methods is not None  # None: the default sweep, which text runs narrow to term bags
        pruned_with = self.prune.methods if self.prune.sizes else ()  # the pruned models' methods and their settings
        self.prune_methods = {name: METHODS[name].make_settings((settings or {}).get(name)) for name in pruned_with}
        self.measure = MeasureSettings(tuple(latency_batch_sizes), num_threads, min_run_time_s)
        self.calibration_batches = calibration_batches
        self.qat = {name: QATSettings.from_values(name, values) for name, values in qat.items()}
        check_max_bytes(max_bytes)
        objective = objective or ("accuracy" if max_bytes is not None else f"latency_bs{min(latency_batch_sizes)}")
        check_objective(objective, latency_batch_sizes)
        unranked = [name for name in sensitivity if name not in self.methods or name == BASELINE]
        if unranked:
            raise ValueError(
                f"Expected `sensitivity` among the configured quantization methods "
                f"({', '.join(n for n in self.methods if n != BASELINE)}), got {unranked[0]!r}."
            )
        self.budget = Budget(max_accuracy_drop, objective, tuple(sensitivity), max_bytes)

    def set_budget(
        self, max_accuracy_drop: float | None = None, objective: str | None = None, max_bytes: int | None = None
    ) -> None:
        """Change the accuracy budget, the objective or the byte budget (``None`` keeps it; a new ``max_bytes``
        without an objective asks for the most accurate row that fits), checked as in ``__init__``."""
        if objective is None:
            objective = self.budget.objective if max_bytes is None else "accuracy"
        max_bytes = self.budget.max_bytes if max_bytes is None else check_max_bytes(max_bytes)
        check_objective(objective, self.measure.latency_batch_sizes)
        drop = self.budget.max_accuracy_drop if max_accuracy_drop is None else max_accuracy_drop
        self.budget = Budget(drop, objective, self.budget.sensitivity, max_bytes)

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # Refuse a model the methods cannot handle now, not after an hour of training.
        try:
            check_quantizable(pl_module.net, list(self.methods | self.prune_methods))
        except ValueError as err:
            raise ConfigError(f"{err} Remove the method from `methods` or change the model.") from err
        if prunable(trainer.datamodule):
            check_prunable(pl_module, self.prune)
        if (self.qat or (self.prune.sizes and prunable(trainer.datamodule))) and not hasattr(pl_module, "fine_tuning"):
            raise ConfigError(
                f"`qat` and `prune` fine-tune a Quantlight classifier (modules.ClassifierModule); "
                f"{type(pl_module).__name__} is not one. Remove them or derive the model from ClassifierModule."
            )

    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.fit_started = time.perf_counter()

    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.best_saved = BestSaved(trainer, self.fit_started)

    # Lightning writes checkpoints after every other callback's epoch-end hook: an epoch's best is seen, written,
    # when the next epoch starts or training ends.
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.best_saved.note(trainer)

    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.best_saved.note(trainer)

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            stages = Stages()
            stages.add("fit", time.perf_counter() - getattr(self, "fit_started", time.perf_counter()))
            saved = self.best_saved.figures() if hasattr(self, "best_saved") else None
            self.run(trainer, pl_module, trainer.datamodule, best_checkpoint(trainer), stages, saved)
        trainer.strategy.barrier("post_training_quantization")  # other ranks wait for the report

    def run(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        datamodule: LightningDataModule | None,
        ckpt_path: str | None,
        stages: Stages | None = None,
        fit_to_best: dict[str, float] | None = None,
    ) -> list[dict[str, Any]]:
        """Report on ``ckpt_path`` (``None``: ``pl_module``'s current weights), logging to ``trainer``'s logger; the
        job's stages and their seconds go into the report (``stages``: a fit timed before, if any), and when the fit
        saved ``ckpt_path``, the epoch and seconds into it (``fit_to_best``)."""
        if datamodule is None:
            raise DataError("PostTrainingQuantization needs a datamodule (its test split); pass `datamodule=`.")
        stages = stages if stages is not None else Stages()
        start = time.perf_counter()
        with stages("data"):
            net = load_net(pl_module, ckpt_path)
            batches = test_batches(datamodule)
            sparse = batches[0][0].layout != torch.strided  # term weights: artifacts read their ids and values
            methods, job = self.methods, {}
            if sparse and not self.methods_named:
                methods = {name: s for name, s in self.methods.items() if name not in dense_only_methods()}
                job["left_out"] = left_out_line(sorted(set(self.methods) - set(methods)), batches[0][0].shape[1])
            needs_calibration = any(METHODS[name].needs_calibration for name in methods)  # the pruned: their own
            calibration = training_inputs(datamodule, self.calibration_batches) if needs_calibration else []
            data = QuantizationData(example=dense(batches[0][0])[:1], calibration=calibration, sparse_input=sparse)
            val = validation_batches(datamodule)
            preprocessing = datamodule.preprocessing() if deployable(datamodule) else None
        folder = Path(report_root(trainer)) / "quantization"
        candidates = self.candidates(trainer, pl_module, datamodule, net, batches, methods, stages)
        writer = tensorboard(trainer)
        rows, decision = quantization_report(
            net,
            candidates,
            batches,
            data,
            folder,
            self.measure,
            None,  # TensorBoard gets the report once, with the bundle and the stages, below
            trainer.global_step,
            val,
            self.budget,
            preprocessing,
            stages,
        )
        if decision is not None and deployable(datamodule):
            self.deploy(folder, rows, decision, net, datamodule, stages)
        if writer is not None:
            with stages("tensorboard"):  # the rows, charts drawn, and HParams runs
                log_tensorboard(writer, rows, trainer.global_step, decision)
        job["stages"] = dict(stages.seconds)
        if fit_to_best is not None:
            job["fit_to_best"] = fit_to_best
        write_report(rows, folder, decision, job)
        if writer is not None:
            log_job(writer, rows, decision, job, trainer.global_step)
        seconds = time.perf_counter() - start
        rank_zero_info(
            f"Quantization report ({len(rows)} rows, {seconds:.1f} s) in {folder}:\n"
            + report_markdown(rows, decision, job)
        )
        return rows

    def candidates(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        datamodule: LightningDataModule,
        net: nn.Module,
        batches: list[Batch],
        methods: dict[str, Any],
        stages: Stages,
    ) -> list[Candidate]:
        """One report row per method, each followed by its ``+qat`` row (QAT fine-tuned here) when configured, then
        the pruned models' rows (text runs with ``prune`` sizes; fine-tuned here)."""
        candidates = []
        root = report_root(trainer)
        for name, settings in methods.items():
            candidates.append(Candidate(name, settings))
            if name in self.qat:
                with stages("qat"):
                    qat = self.qat[name]
                    trained, info = fine_tune_qat(trainer, pl_module, datamodule, net, name, settings, qat, root)
                candidates.append(Candidate(name, settings, name=f"{name}+qat", model=trained, info=info))
        if self.prune.sizes and prunable(datamodule):
            with stages("prune", rows=len(self.prune.sizes)):
                prune_methods, calibration = self.prune_methods, self.calibration_batches
                candidates += pruned_candidates(
                    trainer, pl_module, datamodule, net, self.prune, prune_methods, batches, root, calibration
                )
        return candidates

    def deploy(
        self,
        folder: Path,
        rows: list[dict[str, Any]],
        decision: dict[str, Any],
        net: nn.Module,
        datamodule: LightningDataModule,
        stages: Stages,
    ) -> None:
        """Bundle the recommended row and time it end to end (added to the decision, so to the report)."""
        timing = (self.measure.num_threads, self.measure.min_run_time_s)  # as the report's latency
        decision["deployment"] = ship(folder, rows, decision, net, datamodule, *timing, stages=stages)


def left_out_line(names: Sequence[str], width: int) -> str:
    """Why a text run's default sweep leaves ``names`` out, in one line."""
    return (
        f"Left out of the text default: {', '.join(names)}: their first layer reads whole rows of all {width:,} "
        "terms, not the term ids and weights a text bundle is fed; name them in `methods` to measure them anyway."
    )


def load_net(pl_module: LightningModule, ckpt_path: str | None) -> nn.Module:
    """A fp32 CPU copy of ``pl_module.net`` in eval mode, with the checkpoint's weights when given.

    Raises:
        CheckpointError: The file is missing, unsafe or corrupted, or belongs to another model.
    """
    net = copy.deepcopy(pl_module.net)
    if ckpt_path is not None:
        net.load_state_dict(load_net_weights(ckpt_path, pl_module))
    return net.cpu().float().eval()


def test_batches(datamodule: LightningDataModule) -> list[Batch]:
    """The datamodule's test split as CPU batches (the same inputs for every method)."""
    datamodule.setup("test")
    return [(x.cpu(), y.cpu()) for x, y in datamodule.test_dataloader()]


def validation_batches(datamodule: LightningDataModule) -> list[Batch]:
    """The datamodule's validation split as CPU batches (what the accuracy budget is checked on)."""
    datamodule.setup("fit")
    return [(x.cpu(), y.cpu()) for x, y in datamodule.val_dataloader()]


def training_inputs(datamodule: LightningDataModule, num_batches: int) -> list[torch.Tensor]:
    """The inputs of the first ``num_batches`` training batches, for calibration; sparse term weights stay sparse
    until a calibration reads them (eight dense batches of a 100,000-term vocabulary: 0.8 GB)."""
    datamodule.setup("fit")
    return [x.cpu() for x, _ in islice(datamodule.train_dataloader(), num_batches)]


def report_root(trainer: Trainer) -> str:
    """The run's log dir (TensorBoard version folder), else the logger's save dir, else ``default_root_dir``."""
    logger = trainer.logger
    return getattr(logger, "log_dir", None) or getattr(logger, "save_dir", None) or trainer.default_root_dir


def tensorboard(trainer: Trainer) -> SummaryWriter | None:
    """The run's ``SummaryWriter`` when it logs to TensorBoard."""
    logger = trainer.logger
    return logger.experiment if isinstance(logger, TensorBoardLogger) else None
