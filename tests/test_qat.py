"""Quantization-aware training: the fake-quantized forward is the artifact's, the live module is never
converted, the ``+qat`` row sits beside its PTQ row, and a run killed during QAT resumes bit for bit."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from callbacks import PostTrainingQuantization
from quantization import METHODS, QuantizationData, load_artifact, quantize
from quantization.candidates.qat import FakeQuantLinear, prepare_qat, qat_methods
from tests.helpers import REPO, ResidualNet, checkpoint_callback_args, mnist_args

SETTINGS = "{int3_weight_only: {group_size: null, scale: mse}}"
QAT_ARGS = [
    "--trainer.callbacks+=callbacks.PostTrainingQuantization", "--trainer.callbacks.methods=[int3_weight_only]",
    f"--trainer.callbacks.settings={SETTINGS}", "--trainer.callbacks.qat={int3_weight_only: {epochs: 4}}",
    "--trainer.callbacks.latency_batch_sizes=[1]", "--trainer.callbacks.min_run_time_s=0.005",
]  # fmt: skip


def run_cli(*args: str, expect_kill: bool = False) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "cli.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == (-signal.SIGKILL if expect_kill else 0), proc.stderr[-3000:]
    return proc


@pytest.mark.parametrize("method", qat_methods())
@pytest.mark.parametrize("scale", ["absmax", "mse", "fixed"])
def test_qat_forward_is_the_artifact_bit_for_bit_after_training(method, scale):
    torch.manual_seed(0)
    model = ResidualNet().eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    settings = METHODS[method].make_settings({"group_size": None, "scale": scale, "fixed_exponent": 5})
    qat = prepare_qat(model, method, settings).train()
    assert [type(m) for m in qat.modules() if isinstance(m, nn.Linear)] == [FakeQuantLinear] * 3
    optimizer = torch.optim.SGD(qat.parameters(), lr=0.05)
    x, y = torch.randn(64, 64), torch.randint(0, 4, (64,))
    for _ in range(5):  # the latent weights move through the straight-through gradient
        optimizer.zero_grad()
        nn.functional.cross_entropy(qat(x), y).backward()
        optimizer.step()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())  # the source is only read
    trained = ResidualNet().eval()
    trained.load_state_dict(qat.state_dict())  # the same names: a QAT state dict is a plain one
    assert not torch.equal(trained.state_dict()["head.weight"], before["head.weight"])
    artifact = quantize(trained, method, QuantizationData(torch.zeros(1, 64)), settings)
    with torch.no_grad():
        assert torch.equal(METHODS[method].load(artifact.data, trained, 1).logits(x), qat.eval()(x))


def test_only_methods_with_fake_quantization_are_qat_targets():
    assert {"int2_weight_only", "int3_weight_only", "int4_weight_only", "intn_weight_only"} <= set(qat_methods())
    with pytest.raises(ValueError, match=r"^Expected a `qat` method with fake quantization, one of \(.*\), got 'fp16'"):
        PostTrainingQuantization(qat={"fp16": {}})


@pytest.mark.parametrize(
    ("qat", "match"),
    [
        ({"int3_weight_only": {"epochs": 0}}, r"`qat.<method>.epochs` an integer >= 1, got 0"),
        ({"int3_weight_only": {"lr_scale": -1.0}}, r"`qat.<method>.lr_scale` > 0, got -1.0"),
        ({"int3_weight_only": {"lr": 0.1}}, r"`qat.int3_weight_only` keys in \(epochs, lr_scale\), got 'lr'"),
        ({"nope": {}}, r"Expected `methods` to be a list of"),
    ],
    ids=["epochs", "lr_scale", "key", "method"],
)
def test_qat_settings_are_validated(qat, match):
    with pytest.raises(ValueError, match=match):
        PostTrainingQuantization(qat=qat)


def test_qat_method_is_added_beside_its_ptq_row():
    callback = PostTrainingQuantization(methods=["fp16"], qat={"int2_weight_only": {"epochs": 2}})
    assert (
        list(callback.methods) == ["fp32", "fp16", "int2_weight_only"] and callback.qat["int2_weight_only"].epochs == 2
    )


def qat_run_folder(run: Path) -> Path:
    (folder,) = (run / "qat" / "int3_weight_only").iterdir()  # one digest: one source and one set of settings
    return folder


@pytest.mark.slow
def test_fit_with_qat_reports_it_beside_ptq_and_leaves_the_run_usable(mnist_root: Path, tmp_path: Path):
    args = mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "3", *checkpoint_callback_args(None), *QAT_ARGS)
    run_cli("fit", *args)
    run = tmp_path / "mnist_logistic" / "version_0"
    report = json.loads((run / "quantization" / "report.json").read_text())["methods"]
    assert [r["method"] for r in report] == ["fp32", "int3_weight_only", "int3_weight_only+qat"]
    row = report[2]
    assert row["base_method"] == "int3_weight_only" and row["qat_epochs"] == 4
    assert row["settings"] == report[1]["settings"] == {"group_size": None, "scale": "mse", "fixed_exponent": 7}

    # The +qat artifact is exactly the fake-quantized model QAT trained: its final checkpoint, quantized.
    folder = qat_run_folder(run)
    assert row["qat_checkpoint"] == str(folder / "checkpoints" / "last.ckpt")  # the final, annealed epoch
    qat_state = torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    qat_net = prepare_qat(nn.Linear(784, 10), "int3_weight_only", METHODS["int3_weight_only"].make_settings(
        {"group_size": None, "scale": "mse"}))  # fmt: skip
    qat_net.load_state_dict({k.removeprefix("net."): v for k, v in qat_state.items()})
    x = torch.rand(16, 784)
    runner = load_artifact(run / "quantization" / "int3_weight_only+qat.pt")
    with torch.no_grad():
        assert torch.equal(runner.logits(x), qat_net.eval()(x))
    assert list((folder.parent).iterdir()) == [folder] and any(folder.glob("events.out.tfevents.*"))

    # The main checkpoints stay plain fp32 models: test from one, and fit again, as before QAT existed.
    best = torch.load(run / "checkpoints" / "best.ckpt", weights_only=True)
    assert sorted(best["state_dict"]) == ["net.bias", "net.weight"]
    plain = mnist_args(mnist_root, tmp_path, *checkpoint_callback_args(None))
    run_cli("test", *plain, "--ckpt_path", str(run / "checkpoints" / "best.ckpt"))
    run_cli("fit", *args)
    assert [r["method"] for r in json.loads((tmp_path / "mnist_logistic" / "version_2" / "quantization" /
        "report.json").read_text())["methods"]][-1] == "int3_weight_only+qat"  # fmt: skip


@pytest.mark.slow
def test_fit_with_qat_and_the_progress_bar_exits_zero_showing_qat_epochs(mnist_root: Path, tmp_path: Path):
    # The default (rich) progress bar of the main run and QAT's own trainer share one console: the main run's live
    # display is closed before QAT opens its own, so neither pops the other's (an IndexError at teardown, exit 1).
    args = mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1", *QAT_ARGS, "--trainer.enable_progress_bar",
                      "true")  # fmt: skip
    proc = run_cli("fit", *args)
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output
    assert f"Quantization-aware training for int3_weight_only: 4 epoch(s) in {tmp_path}" in output
    assert re.search(r"Epoch 3/3 .* 8/8", output)  # QAT's last epoch, its bar drawn to the end
    assert "test/acc" in output  # the main run went on to test the best checkpoint


@pytest.mark.slow
def test_qat_killed_and_resumed_matches_uninterrupted(mnist_root: Path, tmp_path: Path):
    def args(out: Path, *extra: str) -> list[str]:
        return [*mnist_args(mnist_root, out, "--trainer.max_epochs", "2", "--test_after_fit", "false",
                            *checkpoint_callback_args(None), *QAT_ARGS), *extra]  # fmt: skip

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run_cli("fit", *args(whole))
    kill = ["--trainer.callbacks+=tests.faults.KillAtQATEpoch", "--trainer.callbacks.epoch=2"]
    run_cli("fit", *args(broken, *kill), expect_kill=True)
    run = broken / "mnist_logistic" / "version_0"
    assert not (run / "quantization").exists()  # died inside QAT, before the report
    qat_last = qat_run_folder(run) / "checkpoints" / "last.ckpt"
    assert torch.load(qat_last, weights_only=True)["epoch"] == 1  # two whole QAT epochs on disk

    resumed = run_cli("fit", *args(broken, "--ckpt_path", str(run / "checkpoints" / "last.ckpt")))
    assert f"Restoring states from the checkpoint path at {qat_last}" in resumed.stdout + resumed.stderr
    assert sorted(p.name for p in (broken / "mnist_logistic").iterdir()) == ["version_0"]

    expected = torch.load(qat_run_folder(whole / "mnist_logistic" / "version_0") / "checkpoints" / "last.ckpt",
                          weights_only=True)  # fmt: skip
    got = torch.load(qat_last, weights_only=True)
    assert got["epoch"] == expected["epoch"] == 3 and got["global_step"] == expected["global_step"]
    for key, value in expected["state_dict"].items():
        assert torch.equal(value, got["state_dict"][key]), key
    for param, state in expected["optimizer_states"][0]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, got["optimizer_states"][0]["state"][param][name]), (param, name)
    rows = [json.loads((out / "mnist_logistic" / "version_0" / "quantization" / "report.json").read_text())["methods"]
            for out in (whole, broken)]  # fmt: skip
    assert rows[0][2]["accuracy"] == rows[1][2]["accuracy"] and rows[0][2]["size_bytes"] == rows[1][2]["size_bytes"]


@pytest.mark.slow
def test_qat_after_a_ddp_fit_runs_once_on_rank_zero(mnist_root: Path, tmp_path: Path):
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--test_after_fit", "false"]
    args = mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1", *checkpoint_callback_args(None), *QAT_ARGS)
    proc = run_cli("fit", *args, *ddp)
    run = tmp_path / "mnist_logistic" / "version_0"
    rows = json.loads((run / "quantization" / "report.json").read_text())["methods"]
    assert [r["method"] for r in rows] == ["fp32", "int3_weight_only", "int3_weight_only+qat"]
    assert torch.load(qat_run_folder(run) / "checkpoints" / "last.ckpt", weights_only=True)["epoch"] == 3
    assert (proc.stdout + proc.stderr).count("Quantization report (3 rows") == 1
