"""Shared test helpers: tiny real-format data, CLI arguments, tolerances. Test modules import from here."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

# Imported at collection, not inside a test: Lightning binds its log handler to the stderr of the
# moment it is first imported, which inside a test is a capture that is closed afterwards.
from cli import main

REPO = Path(__file__).resolve().parents[1]


def mirror_path() -> Path:
    """The offline data mirror (``QUANTLIGHT_MIRROR``, default ``../shared/data``); CI must have it, elsewhere
    the tests that read it are skipped with a reason."""
    path = Path(os.environ.get("QUANTLIGHT_MIRROR", REPO.parent / "shared" / "data"))
    if not (path / "MNIST" / "raw").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"CI needs the offline data mirror, not found at {path} (set QUANTLIGHT_MIRROR).")
        pytest.skip(f"offline data mirror not found at {path}")
    return path.resolve()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an uncompressed IDX file (the MNIST on-disk format)."""
    header = (0x0800 | array.ndim).to_bytes(4, "big")
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def make_digits(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Learnable fake digits: class k lights a 4x4 block at row k, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 10, size=n).astype(np.uint8)
    images = rng.integers(0, 40, size=(n, 28, 28)).astype(np.uint8)
    for i, k in enumerate(labels):
        images[i, 2 * k + 4 : 2 * k + 8, 10:14] = 255
    return images, labels


_POSITIVE = ["good", "great", "love", "happy", "smooth", "safe", "fun", "nice"]
_NEGATIVE = ["bad", "awful", "hate", "sad", "scary", "crash", "slow", "poor"]
_FILLER = ["the", "car", "drives", "road", "today", "city", "bus", "self", "auto", "ride", "my", "new"]


def text_rows(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Learnable tiny sentiment texts, alternating labels: two words of the label plus filler."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = list(rng.choice(_POSITIVE if i % 2 else _NEGATIVE, 2, replace=False))
        words += list(rng.choice(_FILLER, 3, replace=False))
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


def write_text_corpus(path: Path, n: int = 80, seed: int = 0) -> Path:
    """A labelled CSV corpus (``text,label``) of :func:`text_rows`."""
    lines = ["text,label", *(f"{text},{label}" for text, label in text_rows(n, seed))]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_imdb_tree(data_dir: Path, per_folder: int = 12) -> Path:
    """An aclImdb-like tree under ``data_dir``: train/test x neg/pos, one review per ``<id>_<rating>.txt``."""
    rows = text_rows(8 * per_folder, seed=3)
    for split in ("train", "test"):
        for folder, label in (("neg", "negative"), ("pos", "positive")):
            target = data_dir / "aclImdb" / split / folder
            target.mkdir(parents=True)
            texts = [text for text, row_label in rows if row_label == label]
            offset = 0 if split == "train" else per_folder
            for i, text in enumerate(texts[offset : offset + per_folder]):
                (target / f"{i}_{7 if folder == 'pos' else 2}.txt").write_text(f"{text}<br />{text}", encoding="utf-8")
    return data_dir


def cli_error(capsys, *args: str) -> str:
    """Run the CLI expecting a user error (exit status 2, no traceback); return what it wrote to stderr."""

    with pytest.raises(SystemExit) as exc:
        main(list(args))
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    return err


def mnist_args(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        "-c", str(REPO / "configs/mnist_logistic.yaml"),
        "--data.data_dir", str(root), "--data.download", "false", "--data.val_size", "100", "--data.batch_size", "64",
        "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks", "[]",
        *extra,
    ]  # fmt: skip


def checkpoint_callback_args(out: Path | None) -> list[str]:
    """The config's two checkpoints (best by val/acc, last every epoch), under ``out/ckpt`` or the run's folder."""
    best = ["monitor=val/acc", "mode=max", "filename=best", "enable_version_counter=false"]
    last = ["filename=last", "enable_version_counter=false"]
    args = []
    for settings in (best, last):
        args += ["--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint"]
        args += [f"--trainer.callbacks.dirpath={out / 'ckpt'}"] if out else []
        args += [f"--trainer.callbacks.{setting}" for setting in settings]
    return args


def text_args(corpus: Path | str, out: Path, *extra: str) -> list[str]:
    """configs/text_mlp.yaml on a tiny corpus and a tiny MLP, checkpoints in ``out/ckpt``."""
    return [
        "-c", str(REPO / "configs/text_mlp.yaml"),
        "--data.init_args.path", str(corpus), "--data.init_args.batch_size", "8",
        "--model.init_args.hidden_sizes", "[16]", "--model.init_args.dropout", "0.0",
        "--model.init_args.optimizer.init_args.lr", "0.5",
        "--trainer.logger.init_args.save_dir", str(out), "--trainer.enable_progress_bar", "false",
        "--trainer.callbacks", "[]",
        "--trainer.callbacks+=lightning.pytorch.callbacks.ModelCheckpoint",
        f"--trainer.callbacks.dirpath={out / 'ckpt'}", "--trainer.callbacks.filename=last",
        "--trainer.callbacks.enable_version_counter=false",
        *extra,
    ]  # fmt: skip


class ResidualNet(nn.Module):
    """A model that is not a flat Linear stack: Linear -> LayerNorm -> GELU, a residual Linear block scaled
    by a bare parameter (fp32 in every artifact), a Linear head; ``(B, 64) -> (B, 4)``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.inp = nn.Linear(64, 96)
        self.norm = nn.LayerNorm(96)
        self.block = nn.Sequential(nn.Linear(96, 96), nn.GELU())
        self.scale = nn.Parameter(torch.tensor(0.5))
        self.head = nn.Linear(96, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.nn.functional.gelu(self.norm(self.inp(x)))  # (B, 64) -> (B, 96)
        h = h + self.scale * self.block(h)  # residual
        return self.head(h)  # (B, 4)


def tiny_text_model(folder: Path, hidden: int = 16, sparse_input: bool = False):
    """A tiny corpus's datamodule (fitted TF-IDF vectorizer), a seeded random MLP body over it (eval mode), and
    calibration batches as ``QuantizationData`` (``sparse_input`` as the quantization callback sets it for text)."""
    from datamodules.text import TextDataModule
    from modules.mlp import mlp_body
    from quantization import QuantizationData

    corpus = write_text_corpus(folder / "corpus.csv", n=120)
    dm = TextDataModule(str(corpus), batch_size=16)
    torch.manual_seed(0)
    net = mlp_body(dm.input_dim, [hidden], 2, dropout=0.0).eval()
    dm.setup("fit")
    calibration = [x.to_dense() for x, _ in dm.train_dataloader()][:4]
    return dm, net, QuantizationData(example=calibration[0][:1], calibration=calibration, sparse_input=sparse_input)


def blobs_mlp(hidden_layers: int, train: int, test: int, val: int) -> tuple[nn.Module, list, list]:
    """An MLP (32 -> 64, ``hidden_layers`` of 64 units -> 10) trained with Adam on 10 overlapping Gaussian blobs in
    32 dimensions (accuracy ~80 %, sensitive to the weights), on ``train`` examples; then ``test`` and ``val``
    examples, in batches of 100. The same arguments give the same model and batches."""
    generator = torch.Generator().manual_seed(0)
    centers = torch.randn(10, 32, generator=generator) * 0.6

    def batches(n: int) -> list:
        y = torch.randint(0, 10, (n,), generator=generator)
        x = centers[y] + torch.randn(n, 32, generator=generator)
        return [(x[i : i + 100], y[i : i + 100]) for i in range(0, n, 100)]

    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Linear(32, 64), nn.ReLU()]
    for _ in range(hidden_layers - 1):
        layers += [nn.Linear(64, 64), nn.ReLU()]
    net = nn.Sequential(*layers, nn.Linear(64, 10))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    for x, y in batches(train):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    return net.eval(), batches(test), batches(val)
