"""Write ``predict`` output as one row per input: source line, label, class probabilities.

Rows the datamodule skipped as bad are written too, with the reason, so nothing is lost.
The file is written next to its final name and moved into place with ``os.replace``: a
crash never leaves half a file, and an existing file is never overwritten unless asked. By default it goes
into the run of the checkpoint read (``predictions.csv``, then ``predictions.1.csv``, ...), and one line
says how many rows were written, and where.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import torch
from lightning.pytorch import LightningDataModule, LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info

from errors import DataError
from storage.atomic import atomic_write

SUFFIXES = (".csv", ".jsonl")


def prediction_records(
    probabilities: torch.Tensor,
    classes: list[str],
    lines: list[int],
    texts: list[str] | None = None,
    skipped: list[tuple[int, str]] = (),
) -> list[dict]:
    """One record per input row, in line order: predicted label and probabilities, or the skip reason.

    Args:
        probabilities: ``(N, C)`` class probabilities of the predicted rows, in input order.
        classes: ``C`` label names, in class-index order.
        lines: Source line of each predicted row.
        texts: The predicted texts (written with their row when given).
        skipped: ``(line, reason)`` of rows left out as bad.

    Example:
        >>> prediction_records(torch.tensor([[0.25, 0.75]]), ["neg", "pos"], [2], skipped=[(1, "empty text")])
        [{'line': 1, 'error': 'empty text'}, {'line': 2, 'label': 'pos', 'probabilities': {'neg': 0.25, 'pos': 0.75}}]
    """
    records = [{"line": line, "error": reason} for line, reason in skipped]
    labels = probabilities.argmax(dim=1).tolist()  # (N, C) -> (N,)
    for row, (line, label, probs) in enumerate(zip(lines, labels, probabilities.tolist(), strict=True)):
        record = {"line": line, "label": classes[label], "probabilities": dict(zip(classes, probs, strict=True))}
        if texts is not None:
            record["text"] = texts[row]
        records.append(record)
    return sorted(records, key=lambda record: record["line"])


def write_records(path: Path, records: list[dict], classes: list[str]) -> None:
    """Write records as CSV (``line,label,prob_<class>...,error,text``) or JSON Lines, atomically."""
    out = io.StringIO(newline="")
    if path.suffix == ".jsonl":
        out.writelines(json.dumps(record, ensure_ascii=False) + "\n" for record in records)
    else:
        columns = ["line", "label", *(f"prob_{name}" for name in classes), "error", "text"]
        writer = csv.DictWriter(out, columns)
        writer.writeheader()
        for record in records:
            flat = {key: value for key, value in record.items() if key != "probabilities"}
            flat |= {f"prob_{name}": p for name, p in record.get("probabilities", {}).items()}
            writer.writerow(flat)
    atomic_write(path, out.getvalue().encode("utf-8"))


class PredictionWriter(BasePredictionWriter):
    """After ``predict``, write label and class probabilities for every input text.

    Reads from the datamodule, when it has them, ``classes`` (label names) and ``predict_rows``
    (``lines``, ``texts`` and skipped ``bad`` rows); otherwise rows are numbered from 1 and
    labels are class indices.

    Args:
        output_path: ``.csv`` or ``.jsonl`` file, or a folder (an existing one, or a path ending in ``/``) to write
            ``predictions.csv`` into; ``None``: the run's log directory (the checkpoint's run with ``--ckpt_path``
            ``<run>/checkpoints/...``). In a folder, an existing ``predictions.csv`` is kept and the next free
            name taken (``predictions.1.csv``, ...).
        overwrite: Replace an existing ``output_path``; off, so a user's file is never overwritten.
        include_text: Write each input text with its prediction.
    """

    def __init__(self, output_path: str | None = None, overwrite: bool = False, include_text: bool = True) -> None:
        super().__init__(write_interval="epoch")
        folder = output_path is not None and (output_path.endswith(("/", os.sep)) or Path(output_path).is_dir())
        if output_path is not None and not folder and Path(output_path).suffix not in SUFFIXES:
            raise ValueError(
                f"Expected `output_path` to end in one of ({', '.join(SUFFIXES)}), or a folder, got {output_path!r}."
            )
        self.output_path = output_path
        self.output_folder = Path(output_path) if folder else None
        self.overwrite = overwrite
        self.include_text = include_text
        self.written_path: Path | None = None
        self._free: Path | None = None  # the free name chosen in a folder, once per predict

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "predict" and trainer.is_global_zero:
            self.check_output(trainer)

    def check_output(self, trainer: Trainer) -> None:
        """Refuse an existing output file unless ``overwrite``; checked before predicting: a refusal costs nothing."""
        path = self._path(trainer)
        if path.exists() and not self.overwrite:
            raise DataError(
                f"Prediction output {path} already exists and is kept. Pass another "
                "--trainer.callbacks.output_path, or overwrite: true on the PredictionWriter."
            )

    def write_on_epoch_end(self, trainer: Trainer, pl_module: LightningModule, predictions, batch_indices) -> None:
        if not trainer.is_global_zero or not predictions:
            return
        # Lightning unwraps the predictions of a single dataloader but not its batch indices.
        if batch_indices and batch_indices[0] and isinstance(batch_indices[0][0], list):
            batch_indices = batch_indices[0]
        order = [i for batch in batch_indices for i in batch] if batch_indices else None
        probabilities = torch.cat([p.float().cpu() for p in predictions])  # (N, C)
        if order is not None and len(order) == len(probabilities):
            probabilities = probabilities[torch.argsort(torch.as_tensor(order))]  # back to input order
        self.write(trainer, trainer.datamodule, probabilities)

    def write(
        self,
        trainer: Trainer,
        datamodule: LightningDataModule | None,
        probabilities: torch.Tensor,
        names: list[str] | None = None,
    ) -> Path:
        """Write ``(N, C)`` probabilities of the datamodule's predict rows, in input order; return the file.

        Args:
            trainer: Decides the default output folder (its log dir).
            datamodule: Gives ``classes`` and ``predict_rows`` when it has them.
            probabilities: One row per predicted input.
            names: Written as each row's text when the datamodule has no predict rows (e.g. image files).
        """
        classes = list(getattr(datamodule, "classes", None) or range(probabilities.shape[1]))
        rows = getattr(datamodule, "predict_rows", None)
        lines = rows.lines if rows is not None else list(range(1, len(probabilities) + 1))
        texts = rows.texts if rows is not None else names
        skipped = [(bad.line, bad.reason) for bad in rows.bad] if rows is not None else []
        records = prediction_records(
            probabilities, [str(c) for c in classes], lines, texts if self.include_text else None, skipped
        )
        self.written_path = self._path(trainer)
        write_records(self.written_path, records, [str(c) for c in classes])
        bad = f" ({len(skipped):,} of them bad, listed with the reason)" if skipped else ""
        rank_zero_info(f"Wrote {len(records):,} rows{bad} to {self.written_path}")
        return self.written_path

    def _path(self, trainer: Trainer) -> Path:
        if self.output_path is not None and self.output_folder is None:
            return Path(self.output_path)
        if self._free is None:
            folder = self.output_folder or Path(trainer.log_dir or trainer.default_root_dir)
            self._free = free_path(folder / "predictions.csv")
        return self._free


def free_path(path: Path) -> Path:
    """``path`` if no file has that name, else the first free ``<stem>.<n><suffix>``: nothing is overwritten.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "predictions.csv").write_text("")
    >>> free_path(folder / "predictions.csv").name
    'predictions.1.csv'
    """
    n, free = 0, path
    while free.exists():
        n += 1
        free = path.with_name(f"{path.stem}.{n}{path.suffix}")
    return free
