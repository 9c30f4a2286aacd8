"""A Trainer with a ``quantize`` entry point, so ``python cli.py quantize`` reports on an existing checkpoint,
and ``predict`` from a deployable bundle (``--artifact``), so a shipped model answers on raw inputs."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer

from callbacks.prediction_writer import PredictionWriter
from errors import CheckpointError, ConfigError, DataError
from runtime import Bundle, read_images
from storage.checkpoints import use_local_checkpoint_io


class QuantlightTrainer(Trainer):
    """Lightning's Trainer plus :meth:`quantize`, and :meth:`predict` from a bundle.

    Checkpoints are written by :class:`storage.checkpoints.LocalCheckpointIO` unless ``plugins`` names a writer.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        use_local_checkpoint_io(self.strategy)

    def quantize(
        self,
        model: LightningModule,
        datamodule: LightningDataModule,
        ckpt_path: str | None = None,
        max_accuracy_drop: float | None = None,
        objective: str | None = None,
        max_bytes: int | None = None,
    ) -> list[dict[str, Any]]:
        """Run the post-training quantization report on a checkpoint, without training.

        Uses the ``PostTrainingQuantization`` in ``trainer.callbacks`` (all methods when there is none).

        Args:
            model: The configured model; the checkpoint's weights go into a copy of its ``net``.
            datamodule: Data whose test split is measured (and train split calibrates).
            ckpt_path: The ``.ckpt`` written by ``fit``.
            max_accuracy_drop: The accuracy budget (validation points) instead of the callback's.
            objective: ``size``, ``memory``, ``accuracy``, ``latency_bs1`` or ``latency_bs<N>`` instead of the
                callback's.
            max_bytes: The most bytes the recommended row may ship (artifact + preprocessing); without an
                ``objective``, the most accurate row that fits is recommended.
        """
        # The engine (ONNX, ONNX Runtime) loads in the subcommands that use it, not at start-up.
        from callbacks.post_training_quantization import PostTrainingQuantization

        if ckpt_path is None:
            raise CheckpointError("`quantize` needs a checkpoint: pass --ckpt_path <run>/checkpoints/best.ckpt.")
        callback = next((c for c in self.callbacks if isinstance(c, PostTrainingQuantization)), None)
        callback = callback or PostTrainingQuantization()
        try:
            callback.set_budget(max_accuracy_drop, objective, max_bytes)
        except ValueError as err:
            raise ConfigError(str(err)) from err
        datamodule.trainer = self
        datamodule.prepare_data()
        return callback.run(self, model, datamodule, ckpt_path)

    def predict(
        self,
        model: LightningModule | None = None,
        dataloaders: Any = None,
        datamodule: LightningDataModule | None = None,
        return_predictions: bool | None = None,
        ckpt_path: str | Path | None = None,
        weights_only: bool | None = None,
        artifact: str | None = None,
        inputs: str | None = None,
    ) -> list[Any] | None:
        """Predict with the model, or with a deployable bundle's quantized model on raw inputs (``artifact``).

        Args:
            model: The model to predict with (not run with ``artifact``).
            dataloaders: Predict dataloaders, instead of ``datamodule``'s.
            datamodule: Gives the inputs (text: its ``predict_path``), ``classes``, and the writer's rows.
            return_predictions: Return the ``(B, num_classes)`` probabilities (per batch).
            ckpt_path: The checkpoint whose weights ``model`` takes.
            weights_only: Load ``ckpt_path`` as plain tensors and data only (Lightning's default).
            artifact: A bundle folder (``quantization.ship.bundle.write_bundle``): its preprocessing reads the raw
                inputs and its quantized model predicts; the ``PredictionWriter`` writes the same file as
                ``predict`` with a checkpoint. Not with ``ckpt_path``.
            inputs: Raw images for an image bundle: an IDX file (``*-images-idx3-ubyte``), an image file or a
                folder of them (text bundles read the datamodule's ``predict_path``).
        """
        check_predict_arguments(artifact, ckpt_path, inputs)
        if artifact is None:
            return super().predict(model, dataloaders, datamodule, return_predictions, ckpt_path, weights_only)
        writer = next((c for c in self.callbacks if isinstance(c, PredictionWriter)), None)
        if writer is not None:
            writer.check_output(self)  # before any work, as in a checkpoint's predict
        from quantization.ship.bundle import load_bundle  # the engine, as in quantize

        bundle = load_bundle(artifact, num_threads=torch.get_num_threads())
        raw, names = bundle_inputs(bundle, datamodule, inputs)
        classes = getattr(datamodule, "classes", None)
        if classes is not None and [str(c) for c in classes] != bundle.classes:
            raise ConfigError(
                f"The bundle {bundle.folder} predicts classes ({', '.join(bundle.classes)}), the data config gives "
                f"({', '.join(map(str, classes))}). Use the config of the data the bundle's model was trained on."
            )
        probabilities = torch.from_numpy(bundle.predict_proba(raw))  # (N, num_classes)
        if writer is not None:
            writer.write(self, datamodule, probabilities, names)
        return None if return_predictions is False else [probabilities]


def check_predict_arguments(artifact: str | None, ckpt_path: str | Path | None, inputs: str | None) -> None:
    """Refuse ``predict`` arguments that do not go together (the CLI checks them before reading any file)."""
    if artifact is not None and ckpt_path is not None:
        raise ConfigError(
            "Pass --ckpt_path (the checkpoint's fp32 model) or --artifact (a bundle's quantized model), not both."
        )
    if inputs is not None and artifact is None:
        raise ConfigError("--inputs gives raw images to a bundle: pass --artifact <bundle folder> with it.")


def bundle_inputs(
    bundle: Bundle, datamodule: LightningDataModule | None, inputs: str | None
) -> tuple[Sequence, list[str] | None]:
    """The raw inputs a bundle predicts, and their names when the datamodule has no predict rows of its own.

    Text: the datamodule's predict rows (its ``predict_path``, read with its formats and bad-row rules).
    Images: the uint8 images of ``inputs``.
    """
    if bundle.input == "text":
        if inputs is not None:
            raise ConfigError("--inputs gives images; a text bundle reads --data.init_args.predict_path <file>.")
        rows = getattr(datamodule, "predict_rows", None)
        if rows is None:
            raise ConfigError(
                f"The bundle {bundle.folder} reads text, but {type(datamodule).__name__} gives no texts to predict. "
                "Use the text config the model was trained with and --data.init_args.predict_path <file>."
            )
        return rows.texts, None
    if inputs is None:
        raise ConfigError(
            f"The bundle {bundle.folder} reads images: pass --inputs <an *-images-idx3-ubyte file, an image file or "
            "a folder of image files>."
        )
    try:
        images, names = read_images(inputs)
    except (ValueError, OSError) as err:  # OSError: unreadable, or not an image (PIL's UnidentifiedImageError)
        raise DataError(f"{inputs}: {err}") from err
    expected = bundle.featurize.image_shape
    if images.shape[1:] != expected:
        raise DataError(
            f"{inputs} holds {images.shape[2]}x{images.shape[1]} images; the bundle's model reads "
            f"{expected[1]}x{expected[0]}. Resize them to that size first."
        )
    return images, names
