"""The text MLP's sparse first layer: the same training as the dense path at the cost of the batch's terms, the
checkpoint and the engine unchanged, a one-line refusal of optimizers that would update every row, and DDP that
keeps the ranks' rows equal."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import CSVLogger
from torch import nn
from torch.nn import functional as F

from datamodules.text import TextDataModule
from errors import ConfigError
from modules import MLP
from modules.mlp import dropout, mlp_body
from modules.term_rows import is_term_major, row_view, term_major, views
from quantization import METHODS, QuantizationData, load_artifact, quantize, save_artifact
from tests.helpers import REPO, text_args, write_text_corpus

ROWS_GROUP = {"lr": 2.0, "momentum": 0.0}


def sgd(params):
    return torch.optim.SGD(params, lr=0.5, momentum=0.9)


def make_mlp(input_dim: int, sparse: bool, **kwargs) -> MLP:
    torch.manual_seed(0)
    kwargs = {"optimizer": sgd, "first_layer_param_group": ROWS_GROUP, **kwargs}
    return MLP(input_dim=input_dim, hidden_sizes=[16], num_classes=2, sparse_first_layer=sparse, **kwargs)


def train_steps(model: MLP, batches: list) -> torch.optim.Optimizer:
    optimizer = model.configure_optimizers()
    model.train()
    for x, y in batches:
        optimizer.zero_grad()
        F.cross_entropy(model(x), y).backward()
        optimizer.step()
    return optimizer


def fit_briefly(model: MLP, dm: TextDataModule, out: Path, epochs: int = 1, ckpt_path: Path | None = None) -> dict:
    """Two training steps per epoch; the learning rates the charts show (``LearningRateMonitor``), by chart name."""
    monitor = LearningRateMonitor(logging_interval="epoch")
    trainer = Trainer(
        max_epochs=epochs, limit_train_batches=2, limit_val_batches=0, logger=CSVLogger(out), callbacks=[monitor],
        accelerator="cpu", enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
    )  # fmt: skip
    trainer.fit(model, datamodule=dm, ckpt_path=ckpt_path)
    trainer.save_checkpoint(out / "last.ckpt")
    return monitor.lrs


def corpus_batches(tmp_path: Path, batch_size: int = 4) -> tuple[TextDataModule, list]:
    dm = TextDataModule(str(write_text_corpus(tmp_path / "c.csv")), batch_size=batch_size)
    dm.setup("fit")
    return dm, list(dm.train_dataloader())


def test_sparse_rows_train_as_the_dense_first_layer_does(tmp_path):
    dm, batches = corpus_batches(tmp_path)
    sparse, dense = make_mlp(dm.input_dim, True), make_mlp(dm.input_dim, False)
    start = sparse.net[0].weight.detach().clone()
    assert torch.equal(start, dense.net[0].weight)

    x, y = batches[0]
    F.cross_entropy(sparse.train()(x), y).backward()
    grad = sparse.rows.grad.coalesce()
    assert grad.is_sparse and sorted(grad.indices()[0].tolist()) == sorted(set(x.coalesce().indices()[1].tolist()))
    assert sparse.net[0].weight.grad is None  # the Linear weight itself is never a dense gradient's target
    sparse.zero_grad()

    train_steps(sparse, batches)
    train_steps(dense, batches)
    for (name, ours), theirs in zip(sparse.net.state_dict().items(), dense.net.state_dict().values(), strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6), name  # summation order only

    few = batches[:2]  # 8 texts of 5 words: some of the 28 terms are left out
    sparse = make_mlp(dm.input_dim, True)
    train_steps(sparse, few)
    used = torch.unique(torch.cat([xb.coalesce().indices()[1] for xb, _ in few]))
    unused = torch.ones(dm.input_dim, dtype=torch.bool).index_fill_(0, used, False)
    assert unused.sum() > 0 and torch.equal(sparse.net[0].weight[:, unused], start[:, unused])  # never touched
    assert not torch.equal(sparse.net[0].weight[:, used], start[:, used])


def test_adagrad_on_sparse_rows_is_dense_adagrad(tmp_path):
    dm, batches = corpus_batches(tmp_path)

    def adagrad(params):
        return torch.optim.Adagrad(params, lr=0.3)

    sparse, dense = (make_mlp(dm.input_dim, s, optimizer=adagrad, first_layer_param_group=None) for s in (True, False))
    train_steps(sparse, batches)
    train_steps(dense, batches)
    for ours, theirs in zip(sparse.net.parameters(), dense.net.parameters(), strict=True):
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("optimizer", "group", "match"),
    [
        (torch.optim.Adam, None, r"Expected an optimizer that takes sparse gradients .* got Adam"),
        (sgd, None, r"Expected `momentum` 0 for the first layer's rows .* got 0.9"),
        (sgd, {"momentum": 0.0, "weight_decay": 1e-4}, r"Expected `weight_decay` 0 for the first layer's rows"),
    ],
    ids=["adam", "momentum", "weight-decay"],
)
def test_optimizers_that_update_every_row_are_refused(optimizer, group, match):
    model = make_mlp(20, True, optimizer=optimizer, first_layer_param_group=group)
    with pytest.raises(ConfigError, match=match):
        model.configure_optimizers()


def test_the_checkpoint_holds_the_linear_weight_once(tmp_path):
    model = make_mlp(2000, True)
    first = model.net[0]
    assert type(first) is nn.Linear and first.weight.shape == (16, 2000) and is_term_major(first)
    assert set(model.state_dict()) == {f"net.{k}" for k in model.net.state_dict()}  # no second copy, no new key
    other = make_mlp(2000, False)
    with torch.no_grad():
        other.net[0].weight.mul_(3)
    model.load_state_dict(other.state_dict())
    assert torch.equal(model.rows, other.net[0].weight.t()) and views(model.rows, first)  # the loaded weight
    torch.save(model.state_dict(), tmp_path / "m.pt")
    assert (tmp_path / "m.pt").stat().st_size < 2000 * 16 * 4 * 1.1  # the weight's bytes once


def test_rows_view_the_weight_again_after_it_moved(tmp_path):
    dm, batches = corpus_batches(tmp_path)
    model = make_mlp(dm.input_dim, True)
    model.net[0].weight.data = model.net[0].weight.data.clone()  # what a move to another device does
    assert not views(model.rows, model.net[0])
    train_steps(model, batches[:1])
    assert views(model.rows, model.net[0])
    with pytest.raises(ValueError, match="Expected a term-major Linear layer"):
        row_view(nn.Linear(3, 2))
    assert views(row_view(term_major(nn.Linear(3, 2))), nn.Linear(3, 2)) is False


def test_every_method_gives_a_term_major_model_the_artifact_of_its_plain_layout(tmp_path):
    plain = mlp_body(64, [32], 4, dropout=0.1).eval()
    term_major_net = mlp_body(64, [32], 4, dropout=0.1).eval()
    term_major(term_major_net[0]).load_state_dict(plain[0].state_dict())
    term_major_net.load_state_dict(plain.state_dict())
    assert is_term_major(term_major_net[0]) and not is_term_major(plain[0])
    inputs = torch.randn(16, 64, generator=torch.Generator().manual_seed(1))
    data = QuantizationData(example=inputs[:1], calibration=[inputs[:8], inputs[8:]])
    for layout in ("term_major", "plain"):
        (tmp_path / layout).mkdir()
    for name in METHODS:
        paths = [save_artifact(quantize(net, name, data), tmp_path / layout) for net, layout in
                 ((term_major_net, "term_major"), (plain, "plain"))]  # fmt: skip
        ours, theirs = (load_artifact(path).logits(inputs) for path in paths)
        assert torch.allclose(ours, theirs, rtol=1e-5, atol=1e-5), name


def test_dropout_keeps_each_value_with_probability_one_minus_p():
    torch.manual_seed(0)
    out = dropout(torch.ones(400, 500), 0.3)
    values = torch.unique(out).tolist()
    assert len(values) == 2 and values[0] == 0 and values[1] == pytest.approx(1 / 0.7)
    kept = (out > 0).float().mean().item()
    assert abs(kept - 0.7) < 4 * (0.7 * 0.3 / out.numel()) ** 0.5  # within 4 standard errors


@pytest.mark.slow
def test_ddp_keeps_the_ranks_rows_equal(tmp_path: Path):
    corpus = write_text_corpus(tmp_path / "corpus.csv", n=160)
    args = [*text_args(corpus, tmp_path, "--trainer.max_epochs", "2", "--test_after_fit", "false")]
    args += ["--trainer.callbacks+=tests.probes.SaveRankWeights", f"--trainer.callbacks.folder={tmp_path}"]
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    proc = subprocess.run(
        [sys.executable, "cli.py", "fit", *args, *ddp], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["start"].keys() == ranks[0]["end"].keys() and "net.0.weight" in ranks[0]["end"]
    for key, value in ranks[0]["end"].items():
        assert torch.equal(value, ranks[1]["end"][key]), key  # each rank saw its own half of every batch
    assert not torch.equal(ranks[0]["end"]["net.0.weight"], ranks[0]["start"]["net.0.weight"])


@pytest.mark.slow
def test_qat_trains_the_sparse_recipe_first_layer(tmp_path: Path):
    corpus = write_text_corpus(tmp_path / "corpus.csv")
    qat = [
        "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[int4_weight_only]",
        "--trainer.callbacks.qat={int4_weight_only: {epochs: 2}}", "--trainer.callbacks.latency_batch_sizes=[1]",
        "--trainer.callbacks.min_run_time_s=0.005",
    ]  # fmt: skip
    args = text_args(corpus, tmp_path, "--trainer.max_epochs", "2", "--test_after_fit", "false", *qat)
    proc = subprocess.run([sys.executable, "cli.py", "fit", *args], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-4000:]
    run = tmp_path / "text_mlp" / "version_0"
    rows = json.loads((run / "quantization" / "report.json").read_text())["methods"]
    assert [r["method"] for r in rows] == ["fp32", "int4_weight_only", "int4_weight_only+qat"]
    (qat_last,) = (run / "qat" / "int4_weight_only").glob("*/checkpoints/last.ckpt")
    trained = torch.load(qat_last, weights_only=True)
    start = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)  # the main run's end, its best here
    assert trained["epoch"] == 1 and not torch.equal(
        trained["state_dict"]["net.0.weight"], start["state_dict"]["net.0.weight"]
    )
    groups = trained["optimizer_states"][0]["param_groups"]
    assert [g["momentum"] for g in groups] == [0.0, 0.9]  # the first layer's own group, dense in QAT


@pytest.mark.parametrize(("sparse", "first"), [(True, "term_rows"), (False, "first_layer")], ids=["rows", "dense"])
def test_learning_rate_charts_name_the_parameter_groups(sparse, first, tmp_path):
    dm, _ = corpus_batches(tmp_path)
    assert fit_briefly(make_mlp(dm.input_dim, sparse), dm, tmp_path) == {f"lr-SGD/{first}": [2.0], "lr-SGD/rest": [0.5]}


def test_a_checkpoint_of_unnamed_parameter_groups_resumes_with_the_names(tmp_path):
    dm, _ = corpus_batches(tmp_path)
    fit_briefly(make_mlp(dm.input_dim, True), dm, tmp_path)
    checkpoint = torch.load(tmp_path / "last.ckpt", weights_only=True)
    for group in checkpoint["optimizer_states"][0]["param_groups"]:  # as written before the groups had names
        del group["name"]
        group["lr"] /= 2  # settings the resumed run takes from the checkpoint
    torch.save(checkpoint, tmp_path / "unnamed.ckpt")
    lrs = fit_briefly(make_mlp(dm.input_dim, True), dm, tmp_path, epochs=2, ckpt_path=tmp_path / "unnamed.ckpt")
    assert lrs == {"lr-SGD/term_rows": [1.0], "lr-SGD/rest": [0.25]}
