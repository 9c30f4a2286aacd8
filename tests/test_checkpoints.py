"""Checkpoint checks: every way a --ckpt_path can be wrong ends in one CheckpointError naming the fix."""

from __future__ import annotations

import re

import lightning
import pytest
import torch

from cli import main
from errors import CheckpointError
from modules import LogisticRegression
from storage.checkpoints import check_checkpoint_matches, read_checkpoint
from tests.helpers import cli_error, mnist_args


def save_checkpoint(path, model, class_path="modules.LogisticRegression"):
    hparams = {"_class_path": class_path, **{k: model.hparams[k] for k in ("input_dim", "num_classes")}}
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": hparams, "epoch": 0}, path)
    return path


@pytest.fixture
def good(tmp_path):
    return save_checkpoint(tmp_path / "good.ckpt", LogisticRegression(input_dim=784, num_classes=10))


def test_good_checkpoint_loads_and_matches(good):
    checkpoint = read_checkpoint(good)
    check_checkpoint_matches(good, checkpoint, LogisticRegression(input_dim=784, num_classes=10))
    assert checkpoint["state_dict"]["net.weight"].shape == (10, 784)


def test_missing_path(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope.ckpt not found. Pass an existing .ckpt file"):
        read_checkpoint(tmp_path / "nope.ckpt")


@pytest.mark.parametrize("keep", [0.5, 0.01], ids=["half", "header-only"])
def test_truncated(good, keep):
    data = good.read_bytes()
    good.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=r"good.ckpt is truncated or corrupted \(.+\)\. Use another checkpoint"):
        read_checkpoint(good)


def test_corrupted_bytes(good):
    data = bytearray(good.read_bytes())
    data[100:400] = bytes(300)
    good.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"(truncated or corrupted|cannot be loaded safely: it is corrupted)"):
        read_checkpoint(good)


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": LogisticRegression}, path)
    with pytest.raises(CheckpointError, match=r"cannot be loaded safely: .*GLOBAL modules.logistic"):
        read_checkpoint(path)


def test_not_a_lightning_checkpoint(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"net.weight": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match=r"is not a Lightning checkpoint \(no state_dict\)"):
        read_checkpoint(path)


def test_checkpoint_of_another_model(tmp_path):
    path = save_checkpoint(tmp_path / "mlp.ckpt", LogisticRegression(), class_path="modules.MLP")
    with pytest.raises(CheckpointError, match=r"trained with modules.MLP, but the config builds .*LogisticRegression"):
        check_checkpoint_matches(path, read_checkpoint(path), LogisticRegression())


def test_input_width_mismatch(tmp_path):
    path = save_checkpoint(tmp_path / "narrow.ckpt", LogisticRegression(input_dim=100))
    with pytest.raises(CheckpointError, match=r"net.weight has shape \(10, 100\), the model .* has \(10, 784\)"):
        check_checkpoint_matches(path, read_checkpoint(path), LogisticRegression(input_dim=784))


def test_missing_weights(tmp_path):
    path = tmp_path / "empty.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {}}, path)
    with pytest.raises(CheckpointError, match=r"lacks net.bias, net.weight"):
        check_checkpoint_matches(path, read_checkpoint(path), LogisticRegression())


# Through the CLI: one line on stderr, exit status 2, and the user's file untouched.
@pytest.mark.parametrize("subcommand", ["fit", "test", "validate", "predict", "quantize"])
def test_cli_missing_checkpoint(subcommand, mnist_root, tmp_path, capsys):
    line = cli_error(
        capsys, subcommand, *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(tmp_path / "x.ckpt")
    ).splitlines()[-1]
    assert line == f"error: Checkpoint {tmp_path / 'x.ckpt'} not found. Pass an existing .ckpt file to --ckpt_path."


@pytest.mark.parametrize(
    ("class_path", "input_dim", "match"),
    [
        ("modules.MLP", 784, r"^error: Checkpoint .* was trained with modules.MLP, but the config builds modules."),
        ("modules.LogisticRegression", 100, r"^error: Checkpoint .* does not fit the data: net.weight has shape"),
    ],
    ids=["other-model", "input-width"],
)
def test_cli_checkpoint_that_does_not_fit(class_path, input_dim, match, mnist_root, tmp_path, capsys):
    path = save_checkpoint(tmp_path / "other.ckpt", LogisticRegression(input_dim=input_dim), class_path)
    before = path.read_bytes()
    line = cli_error(capsys, "test", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(path)).splitlines()[-1]
    assert re.match(match, line)
    assert path.read_bytes() == before


def test_cli_truncated_checkpoint(good, mnist_root, tmp_path, capsys):
    good.write_bytes(good.read_bytes()[:-200])
    line = cli_error(capsys, "fit", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(good)).splitlines()[-1]
    assert re.match(r"^error: Checkpoint .*good.ckpt is truncated or corrupted", line)


def test_cli_weights_only_false_is_an_explicit_opt_out(mnist_root, tmp_path, capsys):
    # A checkpoint holding a pickled object: refused by default, loaded when the user opts out.
    path = tmp_path / "pickled.ckpt"
    model = LogisticRegression()
    hparams = {"_class_path": "modules.LogisticRegression", "input_dim": 784, "num_classes": 10}
    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": hparams, "note": LogisticRegression}
    torch.save({**checkpoint, "pytorch-lightning_version": lightning.__version__}, path)
    refused = cli_error(capsys, "test", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(path))
    assert "cannot be loaded safely" in refused.splitlines()[-1]
    assert "--weights_only false" in refused.splitlines()[-1]
    main(["test", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(path), "--weights_only", "false"])


def test_checkpoints_are_written_whole_by_the_local_writer_unless_another_is_configured(tmp_path):
    from lightning.pytorch.plugins import TorchCheckpointIO

    from storage.checkpoints import LocalCheckpointIO
    from trainer import QuantlightTrainer

    trainer = QuantlightTrainer(logger=False, enable_progress_bar=False)
    assert type(trainer.strategy.checkpoint_io) is LocalCheckpointIO
    mine = TorchCheckpointIO()
    assert QuantlightTrainer(logger=False, plugins=[mine]).strategy.checkpoint_io is mine
    state = {"state_dict": {"w": torch.arange(6.0)}, "epoch": 3}
    path = tmp_path / "runs" / "last.ckpt"  # its folder made on the way
    trainer.strategy.checkpoint_io.save_checkpoint(state, path)
    path.write_bytes(b"")  # replaced whole by the next write, never appended to
    trainer.strategy.checkpoint_io.save_checkpoint(state | {"epoch": 4}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["epoch"] == 4 and torch.equal(loaded["state_dict"]["w"], torch.arange(6.0))
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no temporary file left beside it
    # Written without the zip's CRC-32 (torch.load never reads it); every other torch.save keeps computing it.
    from torch.utils.serialization import config

    assert config.save.compute_crc32
