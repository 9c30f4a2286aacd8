"""The run's ``config.yaml``, saved without losing the one before it: a resumed ``fit`` keeps the earlier file
beside its own as ``config.<n>.yaml`` (1: the first run's, 2: the first resume's, ...), and a ``predict`` that
writes into a training run leaves that run's config as it is.
"""

from __future__ import annotations

import os
from pathlib import Path

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback


class SaveConfig(SaveConfigCallback):
    """Lightning's ``SaveConfigCallback`` that never overwrites an earlier ``config.yaml`` of the run."""

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if not self.already_saved and self.save_to_log_dir:
            log_dir = trainer.log_dir  # every rank asks: it broadcasts
            earlier = Path(log_dir or ".", self.config_filename)
            if stage == "predict" and earlier.is_file():
                self.already_saved = True  # a training run's config describes its checkpoints: kept as it is
                return
            if trainer.is_global_zero and log_dir is not None:
                keep_earlier(earlier)
        super().setup(trainer, pl_module, stage)


def keep_earlier(path: Path) -> Path | None:
    """Rename ``path`` to the first free ``<stem>.<n><suffix>`` and return it; ``None`` if there is no file.

    >>> import tempfile
    >>> config = Path(tempfile.mkdtemp()) / "config.yaml"
    >>> _ = config.write_text("a: 1")
    >>> keep_earlier(config).name, keep_earlier(config)
    ('config.1.yaml', None)
    """
    if not path.is_file():
        return None
    n = 1
    while (kept := path.with_name(f"{path.stem}.{n}{path.suffix}")).exists():
        n += 1
    os.rename(path, kept)
    return kept
