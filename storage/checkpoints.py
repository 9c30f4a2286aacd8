"""Checks on a checkpoint before Lightning loads it, so a wrong file ends in one clear line, and the writer Lightning
saves checkpoints with (:class:`LocalCheckpointIO`).

Lightning's own failures for these cases are tracebacks deep in ``torch.load`` or
``load_state_dict``; these functions name the file, what was expected, and the fix.
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.strategies import Strategy

from errors import CheckpointError
from storage.atomic import atomic_torch_save


def read_checkpoint(path: str | os.PathLike, weights_only: bool = True) -> dict:
    """Load a Lightning checkpoint, or raise :class:`CheckpointError`.

    Args:
        path: The ``.ckpt`` file.
        weights_only: Refuse anything but plain tensors and data; ``False`` unpickles arbitrary
            objects and is for checkpoints from a source the user trusts (``--weights_only false``).
    """
    path = Path(path)
    if path.is_dir():
        found = sorted(str(p.relative_to(path)) for p in path.rglob("*.ckpt"))[:4]
        holds = f"it holds {', '.join(found)}" if found else "it holds no .ckpt file"
        raise CheckpointError(f"Checkpoint {path} is a directory ({holds}). Pass one .ckpt file to --ckpt_path.")
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {path} not found. Pass an existing .ckpt file to --ckpt_path.")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as err:
        lines = str(err).splitlines()
        reason = next((line.strip() for line in lines if "GLOBAL" in line), lines[0] if lines else "")
        reason = "".join(c if c.isprintable() else "?" for c in reason)[:120]
        raise CheckpointError(
            f"Checkpoint {path} cannot be loaded safely: it is corrupted or holds objects that are not plain "
            f"tensors or data ({reason}). Use a checkpoint written by fit, or pass --weights_only false "
            "only if you trust its source."
        ) from err
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {path} is truncated or corrupted ({str(err).splitlines()[0]}). "
            "Use another checkpoint, e.g. the run's best.ckpt or last.ckpt."
        ) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path} is not a Lightning checkpoint (no state_dict). Pass a .ckpt written by fit.")
    return checkpoint


def check_model_class(path: str | os.PathLike, checkpoint: dict, class_path: str) -> None:
    """Raise :class:`CheckpointError` if ``checkpoint`` was trained with a model class other than ``class_path``."""
    found = checkpoint.get("hyper_parameters", {}).get("_class_path")
    if found is not None and found.rsplit(".", 1)[-1] != class_path.rsplit(".", 1)[-1]:
        raise CheckpointError(
            f"Checkpoint {path} was trained with {found}, but the config builds {class_path}. "
            "Use the config the checkpoint was trained with."
        )


def check_same_data(path: str | os.PathLike, checkpoint: dict, datamodule: Any) -> None:
    """Raise :class:`CheckpointError` if a resumed fit is given other data than ``checkpoint`` was trained on.

    The datamodule's ``data_fingerprint`` (``datamodules.fingerprint``: the corpus as named, its split, a SHA-256 of
    what the split served) is kept in every checkpoint; run before anything of the run is written.
    """
    given = getattr(datamodule, "data_fingerprint", None)
    state = checkpoint.get(type(datamodule).__qualname__)
    saved = state.get("data") if isinstance(state, dict) else None
    if given is None or not isinstance(saved, dict):  # a datamodule without one, or a checkpoint from before it
        return
    if saved.get("sha256") == given["sha256"]:
        return
    raise CheckpointError(
        f"Checkpoint {path} was trained on {saved.get('corpus')} (seed {saved.get('seed')}; {saved.get('rows')}), but "
        f"this fit reads {given['corpus']} (seed {given['seed']}; {given['rows']}): other data or another split, "
        "and resuming would mix them. Resume with the data it was trained on, or start a new run without --ckpt_path."
    )


def check_checkpoint_matches(path: str | os.PathLike, checkpoint: dict, model: torch.nn.Module) -> None:
    """Raise :class:`CheckpointError` unless ``checkpoint`` can be loaded into ``model`` as it is configured."""
    check_model_class(path, checkpoint, f"{type(model).__module__}.{type(model).__qualname__}")
    check_state_fits(f"Checkpoint {path}", checkpoint["state_dict"], model)


def check_state_fits(source: str, state_dict: dict, model: torch.nn.Module) -> None:
    """Raise :class:`CheckpointError` unless ``state_dict`` has every tensor of ``model``, in its shape.

    The one width check of a checkpoint: the CLI runs it before Lightning loads anything, and
    ``ClassifierModule.on_load_checkpoint`` for every other load.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    if missing:
        raise CheckpointError(
            f"{source} does not fit {type(model).__qualname__}: it lacks {', '.join(missing[:3])}. "
            "Use the config the checkpoint was trained with."
        )
    for key, tensor in own.items():
        if state_dict[key].shape != tensor.shape:
            raise CheckpointError(
                f"{source} does not fit the data: {key} has shape {tuple(state_dict[key].shape)}, the model built "
                f"for this data has {tuple(tensor.shape)} (input width or class count differ). Use the data and "
                "vectorizer settings the checkpoint was trained with (text: --data.init_args.vectorizer_checkpoint "
                "<checkpoint> reuses its vectorizer)."
            )


def load_net_weights(path: str | os.PathLike, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The checkpoint's weights of ``model.net`` (keys without ``net.``), after checking they fit ``model``."""
    checkpoint = read_checkpoint(path)
    check_checkpoint_matches(path, checkpoint, model)
    return {k.removeprefix("net."): v for k, v in checkpoint["state_dict"].items() if k.startswith("net.")}


def run_version(ckpt_path: str | os.PathLike) -> str | None:
    """The run directory name (``version_N``) a checkpoint was written in, if it sits in ``<run>/checkpoints/``.

    Example:
        >>> run_version("runs/mnist_logistic/version_3/checkpoints/last.ckpt")
        'version_3'
        >>> run_version("elsewhere/model.ckpt") is None
        True
    """
    path = Path(ckpt_path)
    return path.parent.parent.name if path.parent.name == "checkpoints" else None


def use_local_checkpoint_io(strategy: Strategy) -> None:
    """Have ``strategy`` write checkpoints with :class:`LocalCheckpointIO`, unless it was given another writer."""
    if strategy._checkpoint_io is None:  # no writer configured: Lightning would make its default TorchCheckpointIO
        strategy.checkpoint_io = LocalCheckpointIO()


class LocalCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, a local file written with :func:`storage.atomic.atomic_torch_save` (straight to
    a temporary file beside it, then renamed over the old one) instead of serialized in memory and copied out: a
    checkpoint or two every epoch, at 13 MB each for the text recipe. Other filesystems (``s3://...``) and storage
    options go to Lightning's own writer."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_torch_save(checkpoint, path)
        return None
