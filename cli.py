"""Quantlight's command line: LightningCLI with the model and data chosen by ``class_path``.

python cli.py fit -c configs/mnist_logistic.yaml
python cli.py test -c configs/mnist_logistic.yaml --ckpt_path <run>/checkpoints/last.ckpt
python cli.py quantize -c configs/mnist_logistic.yaml --ckpt_path <run>/checkpoints/best.ckpt
python cli.py predict -c configs/text_mlp.yaml --artifact <bundle folder> --data.init_args.predict_path texts.txt
"""

from __future__ import annotations

import collector  # (first: the collector stays off while torch and Lightning import)

# isort: split
import importlib
import sys
from argparse import ArgumentError
from pathlib import Path

import console  # noqa: F401  (first: drops upstream noise, some of it emitted while torch loads)
import deferred_imports  # noqa: F401  (before Lightning: torchmetrics' metric domains load when used)

# isort: split
from jsonargparse import Namespace
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch import LightningDataModule
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from callbacks.best_checkpoint import best_checkpoint, check_unique_state_keys
from callbacks.save_config import SaveConfig
from datamodules.text_vectorizer import link_checkpoint_vectorizer
from errors import ConfigError, QuantlightError
from modules import ClassifierModule
from parser_errors import one_line
from storage.checkpoints import (
    check_checkpoint_matches,
    check_model_class,
    check_same_data,
    read_checkpoint,
    run_version,
)
from trainer import QuantlightTrainer, check_predict_arguments

collector.resume()

BASE_CONFIG = Path(__file__).resolve().parent / "configs" / "base.yaml"
# --ckpt_path values that Lightning resolves itself rather than reading a file.
_CKPT_KEYWORDS = {"best", "last", "hpc", "registry"}


class QuantlightCLI(LightningCLI):
    """LightningCLI that links data shapes into the model and tests the best checkpoint after fit.

    Adds the ``quantize`` subcommand: the post-training quantization report on ``--ckpt_path``.

    Args:
        args: Command-line arguments (``sys.argv[1:]`` when ``None``).
        run: Run the subcommand; ``False`` only instantiates (used by tests and tools).
    """

    def __init__(self, args: list[str] | None = None, run: bool = True) -> None:
        self.bundle_manifest: dict | None = None  # `predict --artifact <bundle>`: its checked bundle.json
        super().__init__(
            ClassifierModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            trainer_class=QuantlightTrainer,
            auto_configure_optimizers=False,  # optimizer and scheduler are model arguments
            save_config_callback=SaveConfig,  # a resumed fit keeps the earlier config.yaml as config.<n>.yaml
            save_config_kwargs={"overwrite": True},  # resuming into an existing run directory
            # configs/base.yaml first (trainer, checkpoints, quantization), then the experiment's -c file.
            parser_kwargs=base_config_kwargs(self.subcommands() if run else None),
            args=args,
            run=run,
        )

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        # A parse error is raised (and printed by `main` as one line), not printed as usage plus a type tree.
        return super().init_parser(**kwargs, exit_on_error=False)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return LightningCLI.subcommands() | {"quantize": {"model", "datamodule"}}

    def parse_arguments(self, parser: LightningArgumentParser, args) -> None:
        super().parse_arguments(parser, args)
        # `predict --artifact <bundle>`: checked now, and its classes and input width stand in for the data's.
        if self.config.get("subcommand") == "predict":
            config = self.config.predict
            check_predict_arguments(config.get("artifact"), config.get("ckpt_path"), config.get("inputs"))
            if config.get("artifact"):
                from quantization.ship.bundle import read_manifest  # the engine loads for the subcommands that use it

                self.bundle_manifest = read_manifest(config.artifact)[1]
        # Lightning reads --ckpt_path's hyperparameters (and takes its model class) next: check the file
        # and the class first, so a missing, unsafe, corrupted or foreign checkpoint is a one-line
        # CheckpointError, not a torch.load traceback or a silently different model.
        self.checkpoint = None
        if ckpt_path := self._ckpt_path():
            config = self.config[self.config.subcommand]
            self.checkpoint = read_checkpoint(ckpt_path, weights_only=not self._trusted())
            check_model_class(ckpt_path, self.checkpoint, config.model.class_path)

    def _parse_ckpt_path(self) -> None:
        # The one private override: Lightning re-reads the hyperparameters with weights_only=True, which a
        # pickled checkpoint the user trusts (`--weights_only false`) cannot pass; no public hook skips it.
        if not self._trusted():
            super()._parse_ckpt_path()

    def _trusted(self) -> bool:
        subcommand = self.config.get("subcommand")
        return bool(subcommand) and self.config[subcommand].get("weights_only") is False

    def _ckpt_path(self) -> str | None:
        subcommand = self.config.get("subcommand")
        ckpt_path = self.config[subcommand].get("ckpt_path") if subcommand else None
        return None if ckpt_path is None or ckpt_path in _CKPT_KEYWORDS else ckpt_path

    def before_instantiate_classes(self) -> None:
        # `fit --ckpt_path <run>/checkpoints/last.ckpt` (and `quantize`, `predict`) continue in that run's directory,
        # so its best checkpoint, TensorBoard curves, report and predictions stay one run.
        if self.subcommand in ("fit", "quantize", "predict") and (ckpt_path := self._ckpt_path()):
            resume_run_directory(self.config[self.subcommand].trainer, ckpt_path)
        bundle = Path(self.config.predict.get("artifact") or "") if self.subcommand == "predict" else None
        if bundle is not None and bundle.parent.name == "quantization":  # <run>/quantization/bundle: into that run
            resume_run_directory(self.config.predict.trainer, str(bundle.parent.parent / "checkpoints" / bundle.name))
        if self.subcommand is not None:  # a text datamodule takes its fitted vectorizer from --ckpt_path
            link_checkpoint_vectorizer(self.config[self.subcommand])
        if self.bundle_manifest is not None:
            check_bundle_input(self.config.predict, self.bundle_manifest)
            use_bundle_classes(self.config.predict, self.bundle_manifest)
        if self.subcommand == "fit":
            refuse_empty_training(self.config.fit.trainer)

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
        except ValueError as err:  # jsonargparse wraps a constructor's refusal: raise the refusal itself
            if (user_error := first_user_error(err)) is not None:  # e.g. a bad corpus, met while a link reads the data
                raise user_error from err
            refusal = innermost(err)
            if not isinstance(refusal, ValueError):
                raise
            raise ConfigError(str(refusal)) from err

    def instantiate_trainer(self, **kwargs):
        # Lightning refuses callbacks that share a state key with a traceback from the Trainer; say which, in one line.
        config = self.config_init[self.subcommand] if self.subcommand else self.config_init
        callbacks = config.get("trainer", {}).get("callbacks") or []
        check_unique_state_keys(callbacks if isinstance(callbacks, list) else [callbacks])
        return super().instantiate_trainer(**kwargs)

    def after_instantiate_classes(self) -> None:
        super().after_instantiate_classes()
        if self.checkpoint is not None:  # the data decides the model's width: check it fits the weights
            check_checkpoint_matches(self._ckpt_path(), self.checkpoint, self.model)
        if self.checkpoint is not None and self.subcommand == "fit":  # a resumed fit: the data it was trained on
            check_same_data(self._ckpt_path(), self.checkpoint, self.datamodule)  # before anything is written

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # The datamodule knows its feature width and class count; the model never repeats them.
        parser.link_arguments("data", "model.init_args.input_dim", compute_fn=self._input_dim, apply_on="instantiate")
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        # A cosine schedule anneals over the run's epochs: its length is the trainer's, written once.
        parser.link_arguments("trainer.max_epochs", "model.init_args.lr_scheduler.init_args.T_max", apply_on="parse")
        parser.add_argument(
            "--test_after_fit",
            type=bool,
            default=True,
            help="After fit, evaluate the best checkpoint on the test split and log test/acc.",
        )

    def _input_dim(self, datamodule: LightningDataModule) -> int:
        # Predicting from a bundle, the configured model is not run (the bundle holds the quantized one): its width
        # is the bundle's, so a text config needs neither its corpus nor a checkpoint to fit a vectorizer.
        manifest = self.bundle_manifest
        return int(manifest["input_dim"]) if manifest is not None else datamodule.input_dim

    def after_fit(self) -> None:
        if self.config_init[self.subcommand].get("test_after_fit") and not self.trainer.fast_dev_run:
            best = best_checkpoint(self.trainer, warn=False)  # None: the final weights
            self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best)


def refuse_empty_training(trainer: Namespace) -> None:
    """Refuse a ``fit`` that trains nothing (0 epochs, steps or batches): its report would describe random weights."""
    for name in ("max_epochs", "max_steps", "limit_train_batches"):
        if trainer.get(name) == 0:
            raise ConfigError(
                f"--trainer.{name} 0 trains nothing, and the test accuracy and quantization report would describe "
                f"an untrained model. Set {name} >= 1 (or use `validate`/`test` with --ckpt_path)."
            )


def check_bundle_input(config: Namespace, manifest: dict) -> None:
    """Refuse a bundle whose input kind (text, image) is not what the configured datamodule reads."""
    data = config.get("data")
    class_path = data.get("class_path") if isinstance(data, Namespace) else None
    module, _, name = (class_path or "").rpartition(".")
    kind = getattr(getattr(importlib.import_module(module), name, None), "input_kind", None) if module else None
    if kind is not None and kind != manifest["input"]:
        words = {"image": "images"}
        bundle_reads, data_reads = (words.get(k, k) for k in (manifest["input"], kind))
        raise ConfigError(
            f"The bundle reads {bundle_reads} ({manifest['input_dim']} features), but the config's data, {class_path}, "
            f"reads {data_reads}. Predict with the config its model was trained with (its data reads {bundle_reads})."
        )


def use_bundle_classes(config: Namespace, manifest: dict) -> None:
    """Give a datamodule with a ``classes`` argument the bundle's classes when unset; refuse other classes."""
    init_args = config.get("data", {}).get("init_args")
    if init_args is None or "classes" not in init_args:
        return
    given, classes = init_args.get("classes"), list(manifest["classes"])
    if given is None:
        init_args["classes"] = classes
    elif list(given) != classes:
        raise ConfigError(
            f"The bundle predicts classes ({', '.join(classes)}), --data.init_args.classes gives "
            f"({', '.join(given)}). Leave classes unset, or pass [{','.join(classes)}]."
        )


def base_config_kwargs(subcommands: dict | None) -> dict:
    """``parser_kwargs`` that read configs/base.yaml first, per subcommand (or for a parser without any)."""
    base = {"default_config_files": [str(BASE_CONFIG)]}
    return base if subcommands is None else dict.fromkeys(subcommands, base)


def innermost(err: BaseException) -> BaseException:
    """The first exception of a chain (``raise ... from`` / raised while handling), e.g. a constructor's own.

    ``raise ... from None`` ends the chain there, as in Python's own traceback: a refusal that explains a library
    error in its message (an invalid ``token_pattern``'s ``re.error``) is the refusal.

    >>> try:
    ...     try:
    ...         raise ValueError("Expected `batch_size` >= 1, got 0.")
    ...     except ValueError as inner:
    ...         raise ValueError("Does not validate against any of the Union subtypes") from inner
    ... except ValueError as outer:
    ...     print(innermost(outer))
    Expected `batch_size` >= 1, got 0.
    """
    while (cause := err.__cause__ or (None if err.__suppress_context__ else err.__context__)) is not None:
        err = cause
    return err


def first_user_error(err: BaseException) -> QuantlightError | None:
    """The outermost :class:`QuantlightError` in an exception's chain, if any."""
    while err is not None and not isinstance(err, QuantlightError):
        err = err.__cause__ or err.__context__
    return err


def resume_run_directory(trainer_config: Namespace, ckpt_path: str) -> None:
    """Point a TensorBoardLogger without a fixed version at the run directory that holds ``ckpt_path``."""
    logger, version = trainer_config.get("logger"), run_version(ckpt_path)
    if not isinstance(logger, Namespace) or version is None or not logger.class_path.endswith("TensorBoardLogger"):
        return
    args = logger.init_args
    run_dir = Path(args.save_dir, args.name or "", version).resolve()
    if args.get("version") is None and run_dir == Path(ckpt_path).resolve().parent.parent:
        args.version = version


def main(args: list[str] | None = None) -> None:
    try:
        QuantlightCLI(args)
    except (QuantlightError, MisconfigurationException) as err:  # the user's input, not a bug: no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    except ArgumentError as err:  # a flag or config value the parser refuses
        given = sys.argv[1:] if args is None else args
        subcommand = next((arg for arg in given if arg in QuantlightCLI.subcommands()), None)
        print(f"error: {one_line(str(err), subcommand)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
