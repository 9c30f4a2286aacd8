"""Vocabulary pruning after ``fit``: smaller copies of a text model, each keeping the terms (and hidden units) that
matter, fine-tuned briefly and measured as report rows ``<method>+prune<terms>[x<hidden>]`` beside the rest.

Lightning glue around ``quantization.candidates.pruning``: the importance of each term is measured on the training
split, the pruned copy is fine-tuned like QAT's (``callbacks.fine_tuning``: a module of its own, in
``<run>/prune/<size>/<digest>/``, resumable bit for bit), reading the kept columns of the run's own batches,
renormalized; its rows are measured on what a bundle of it computes from raw text (the pruned vocabulary's
featurizer), so a shipped pruned model agrees with its report row.
"""

from __future__ import annotations

import copy
import inspect
import itertools
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info
from torch import nn

from callbacks.fine_tuning import batches_for, digest_folder, fine_tune, seed_from
from callbacks.prune_settings import PruneSettings, PruneSize
from errors import ConfigError
from quantization import METHODS, QuantizationData
from quantization.candidates.pruning import (
    KeptColumns,
    featurized_batches,
    first_layer,
    hidden_layer,
    input_importance,
    input_statistics,
    keep_top,
    normalizes,
    prune_model,
    prune_preprocessing,
    unit_importance,
)
from quantization.measure.rows import Batch, Candidate, RowInputs
from runtime import featurizer
from storage.checkpoints import load_net_weights


def prunable(datamodule: LightningDataModule | None) -> bool:
    """Whether the data is a vocabulary (text) whose splits this glue can read raw."""
    return getattr(datamodule, "input_kind", None) == "text" and all(
        hasattr(datamodule, name) for name in ("preprocessing", "split_rows")
    )


def check_prunable(pl_module: LightningModule, settings: PruneSettings) -> None:
    """Refuse, before training, a text model these settings cannot prune: no Linear over the input, or a module
    that cannot be built narrower (``input_dim``)."""
    if not settings.sizes:
        return
    try:
        first_layer(pl_module.net)
    except (ValueError, AttributeError) as err:
        raise ConfigError(f"{err} Set `prune` to null.") from err
    if "input_dim" not in inspect.signature(type(pl_module).__init__).parameters:
        raise ConfigError(
            f"Vocabulary pruning builds a narrower copy of the model, but {type(pl_module).__name__} takes no "
            "`input_dim` argument. Set `prune` to null."
        )


def pruned_shape(net: nn.Module, size: PruneSize) -> tuple[int, int | None, str] | None:
    """The terms and hidden units ``size`` keeps of ``net`` (``None`` units: all), and the rows' name suffix;
    ``None`` when it keeps the whole vocabulary."""
    vocabulary = first_layer(net).in_features
    terms = size.count(vocabulary)
    if terms >= vocabulary:
        return None
    try:
        units = net[hidden_layer(net)].in_features
    except ValueError:  # no hidden layer (a logistic regression): only terms are pruned
        units = None
    hidden = size.hidden if units is not None and size.hidden is not None and size.hidden < units else None
    return terms, hidden, f"prune{terms}" + (f"x{hidden}" if hidden is not None else "")


def narrower(pl_module: LightningModule, input_dim: int, hidden: int | None) -> LightningModule:
    """A new module of ``pl_module``'s class with its hyperparameters, but ``input_dim`` inputs and, with
    ``hidden``, that many units in the first hidden layer (the class builds it as for any other data)."""
    parameters = inspect.signature(type(pl_module).__init__).parameters
    shape = {"input_dim": input_dim}
    if hidden is not None:
        shape["hidden_sizes"] = [hidden, *list(pl_module.hparams["hidden_sizes"])[1:]]
    factories = ("optimizer", "lr_scheduler")  # built by the CLI: shared below, never copied (they may hold locks)
    arguments = {k: v for k, v in pl_module.hparams.items() if k in parameters and k not in factories} | shape
    module = type(pl_module)(**arguments)
    for key in factories:
        if hasattr(pl_module, f"{key}_factory"):
            setattr(module, f"{key}_factory", getattr(pl_module, f"{key}_factory"))
    module.hparams.update({**pl_module.hparams, **shape})  # plain config, as the run's (its checkpoints load safely)
    return module


@contextmanager
def whole_training_split(datamodule: LightningDataModule) -> Iterator[Iterator[torch.Tensor]]:
    """The inputs of every training batch, as one process sees them (a DDP run's rank zero would see its shard)."""
    trainer = datamodule.trainer
    datamodule.trainer = None  # the loader shards by the trainer's world size: none here
    try:
        datamodule.setup("fit")
        yield (x.cpu() for x, _ in datamodule.train_dataloader())
    finally:
        datamodule.trainer = trainer


def pruned_candidates(
    trainer: Trainer,
    pl_module: LightningModule,
    datamodule: LightningDataModule,
    net: nn.Module,
    settings: PruneSettings,
    method_settings: Mapping[str, Any],
    batches: Sequence[Batch],
    root: str | Path,
    calibration_batches: int = 8,
) -> list[Candidate]:
    """Report rows of pruned, fine-tuned copies of ``net``: per size in ``settings.sizes``, one row per method.

    Args:
        trainer: The main run's trainer.
        pl_module: The main run's module (its class and hyperparameters build each narrower copy); never changed.
        datamodule: The run's text data: training split (importance, fine-tuning), raw validation and test texts.
        net: The best checkpoint's plain fp32 net; only read.
        settings: Sizes, methods, importance rule and fine-tuning.
        method_settings: Settings per method (the report's); a method absent here runs with its defaults.
        batches: The report's test batches (their labels are the pruned rows' labels).
        root: The run's folder: each fine-tuning goes in ``<root>/prune/<size>/<digest>/``.
        calibration_batches: Training batches static methods calibrate on.
    """
    preprocessing = datamodule.preprocessing()
    vocabulary = first_layer(net).in_features
    shapes = [shape for size in settings.sizes if (shape := pruned_shape(net, size)) is not None]
    skipped = len(settings.sizes) - len(shapes)
    if skipped:
        rank_zero_info(f"Vocabulary pruning: {skipped} size(s) keep all {vocabulary:,} terms; skipped.")
    shapes = list({name: (terms, hidden, name) for terms, hidden, name in shapes}.values())  # sizes that coincide
    if not shapes:
        return []
    statistics = {}
    if settings.importance != "weight":  # the other rules weigh the terms by their inputs on the training split
        with whole_training_split(datamodule) as inputs:
            statistics = input_statistics(inputs, vocabulary)
    scores = input_importance(net, statistics, settings.importance)
    normalize = normalizes(preprocessing)
    tokenize = featurizer(preprocessing)  # the pruned vocabularies keep its tokenizing: each split tokenized once
    split_terms = {split: tokenize.terms(datamodule.split_rows(split).texts) for split in ("test", "val")}
    candidates = []
    for terms, hidden, name in shapes:
        columns = keep_top(scores, terms)
        pruned = prune_model(net, columns)
        units = None
        if hidden is not None:  # the units' mean activations, on the examples one fine-tuning epoch reads at most
            with whole_training_split(datamodule) as inputs:
                sample = itertools.islice(inputs, batches_for(settings.examples_per_epoch, datamodule))
                kept = map(KeptColumns(columns, normalize), sample)
                units = keep_top(unit_importance(pruned, kept), hidden)
            pruned = prune_model(net, columns, units)
        trained, info = _fine_tune(
            trainer, pl_module, datamodule, pruned, columns, units, normalize, settings, name, root
        )
        info |= {"pruned_terms": terms, "vocabulary_terms": vocabulary, "importance": settings.importance}
        info |= {"hidden_units": trained[hidden_layer(trained)].in_features} if hidden is not None else {}
        pruned_preprocessing = prune_preprocessing(preprocessing, columns)
        inputs = _row_inputs(
            datamodule, name, pruned_preprocessing, split_terms, batches, columns, normalize, calibration_batches
        )
        for method in settings.methods:
            chosen = method_settings.get(method) or METHODS[method].make_settings()
            candidates.append(Candidate(method, chosen, f"{method}+{name}", trained, info, inputs=inputs))
    return candidates


def _fine_tune(
    trainer: Trainer,
    pl_module: LightningModule,
    datamodule: LightningDataModule,
    pruned: nn.Module,
    columns: torch.Tensor,
    units: torch.Tensor | None,
    normalize: bool,
    settings: PruneSettings,
    name: str,
    root: str | Path,
) -> tuple[nn.Module, dict[str, Any]]:
    """Fine-tune ``pruned`` in a narrower copy of ``pl_module`` on the kept columns of the run's batches."""
    chosen = {"columns": columns.tolist(), "units": None if units is None else units.tolist()}
    tuning = {"importance": settings.importance, "epochs": settings.epochs, "lr_scale": settings.lr_scale}
    bound = settings.examples_per_epoch
    if bound is not None and bound < len(datamodule.split_rows("train").texts):  # a bound that binds: other draws
        tuning["examples_per_epoch"] = bound
    folder = digest_folder(root, "prune", name, pruned, [tuning, chosen])
    seed_from(folder)
    units_kept = None if units is None else len(units)
    module = narrower(pl_module, len(columns), units_kept)
    module.net.load_state_dict(pruned.state_dict())
    title = f"Vocabulary pruning to {len(columns):,} terms" + (f" and {units_kept} units" if units_kept else "")
    resume = fine_tune(trainer, module, datamodule, folder, settings, title, transform=KeptColumns(columns, normalize))
    trained = copy.deepcopy(pruned)
    trained.load_state_dict(load_net_weights(resume, module))
    info = {"prune_epochs": settings.epochs, "prune_lr_scale": settings.lr_scale, "prune_checkpoint": str(resume)}
    return trained.eval(), info


def _row_inputs(
    datamodule: LightningDataModule,
    name: str,
    preprocessing: dict[str, Any],
    terms: Mapping[str, Sequence[Sequence[str]]],
    batches: Sequence[Batch],
    columns: torch.Tensor,
    normalize: bool,
    calibration_batches: int,
) -> RowInputs:
    """The pruned model's test and validation batches from raw text through the pruned vocabulary's featurizer (what
    its bundle computes; ``terms``: each split's texts' terms), calibration batches from the run's own (kept columns,
    renormalized)."""
    size = len(batches[0][1])
    test_texts, val_texts = datamodule.split_rows("test").texts, datamodule.split_rows("val").texts
    test = featurized_batches(preprocessing, test_texts, torch.cat([y for _, y in batches]), size, terms["test"])
    datamodule.setup("fit")
    val_labels = torch.cat([y.cpu() for _, y in datamodule.val_dataloader()])
    val = featurized_batches(preprocessing, val_texts, val_labels, size, terms["val"])
    with whole_training_split(datamodule) as inputs:
        first = itertools.islice(inputs, calibration_batches)
        keep = KeptColumns(columns, normalize)
        calibration = [keep(x).to_dense() for x in first]  # (B, K) each
    data = QuantizationData(example=calibration[0][:1], calibration=calibration, sparse_input=True)
    return RowInputs(name, test, val, data, preprocessing)
