"""The CLI end to end on tiny synthetic MNIST: fit, resume, test, and every config instantiates."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import PostTrainingQuantization
from cli import QuantlightCLI, main
from tests.helpers import REPO, checkpoint_callback_args, mnist_args, write_imdb_tree, write_text_corpus

CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if p.name != "base.yaml")  # base: read by each


def test_fast_dev_run_fit(mnist_root, tmp_path):
    main(["fit", *mnist_args(mnist_root, tmp_path, "--trainer.fast_dev_run", "true")])


def test_fit_then_test_best_checkpoint_and_resume(mnist_root, tmp_path):
    ckpt_args = checkpoint_callback_args(tmp_path)
    main(["fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "2", *ckpt_args)])
    last = tmp_path / "ckpt" / "last.ckpt"
    state = torch.load(last, weights_only=True)  # no pickled objects in our checkpoints
    assert state["epoch"] == 1
    assert state["hyper_parameters"]["input_dim"] == 784

    # Resume into the same run directory and continue to max_epochs=4.
    main(["fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "4", *ckpt_args), "--ckpt_path", str(last)])
    resumed = torch.load(last, weights_only=True)
    assert resumed["epoch"] == 3
    assert resumed["global_step"] == 4 * state["global_step"] // 2

    cli = QuantlightCLI(args=["test", *mnist_args(mnist_root, tmp_path), "--ckpt_path", str(last)])
    assert cli.trainer.callback_metrics["test/acc"] > 0.9  # the synthetic digits are easy


@pytest.mark.parametrize("config", CONFIGS, ids=[c.name for c in CONFIGS])
def test_every_config_instantiates(config, mnist_root, tmp_path):
    overrides = {
        "mnist_logistic.yaml": ["--data.data_dir", str(mnist_root), "--data.download", "false"],
        "text_mlp.yaml": ["--data.init_args.path", str(write_text_corpus(tmp_path / "c.csv"))],
        "text_mlp_seed.yaml": ["--data.init_args.path", str(write_text_corpus(tmp_path / "c.csv"))],
        "text_mlp_dense.yaml": ["--data.init_args.path", str(write_text_corpus(tmp_path / "c.csv"))],
        "imdb_mlp.yaml": [
            "--data.init_args.data_dir", str(write_imdb_tree(tmp_path / "imdb")),
            "--data.init_args.download", "false", "--data.init_args.min_df", "1",
        ],
    }  # fmt: skip
    cli = QuantlightCLI(
        args=[
            "-c", str(config), "--trainer.logger.init_args.save_dir", str(tmp_path), *overrides[config.name],
            "--trainer.enable_progress_bar", "false",  # works with every config's callbacks (CI logs)
        ],
        run=False,
    )  # fmt: skip
    assert cli.model.hparams.num_classes == cli.datamodule.num_classes
    assert cli.model.hparams.input_dim == cli.datamodule.input_dim
    assert any(isinstance(c, PostTrainingQuantization) for c in cli.trainer.callbacks)  # from configs/base.yaml


def test_bad_data_dir_is_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["fit", *mnist_args(tmp_path / "nowhere", tmp_path, "--trainer.fast_dev_run", "true")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: MNIST files not found in")
    assert "Traceback" not in err


def test_resume_continues_in_the_same_run_directory(mnist_root, tmp_path):
    args = [*mnist_args(mnist_root, tmp_path), *checkpoint_callback_args(None), "--test_after_fit", "false"]
    main(["fit", *args, "--trainer.max_epochs", "2"])
    run = tmp_path / "mnist_logistic" / "version_0"
    main(["fit", *args, "--trainer.max_epochs", "3", "--ckpt_path", str(run / "checkpoints" / "last.ckpt")])

    assert sorted(p.name for p in (tmp_path / "mnist_logistic").iterdir()) == ["version_0"]
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2
    best_state = next(s for k, s in last["callbacks"].items() if "val/acc" in k)
    # The best of the whole run is tracked across the resume, not restarted in a new folder.
    assert Path(best_state["best_model_path"]) == run / "checkpoints" / "best.ckpt"
    assert best_state["best_model_score"] is not None


@pytest.mark.parametrize("epochs", [4, 15])
def test_cosine_schedule_follows_the_run_length(epochs, mnist_root, tmp_path):
    cli = QuantlightCLI(args=[*mnist_args(mnist_root, tmp_path), "--trainer.max_epochs", str(epochs)], run=False)
    scheduler = cli.model.configure_optimizers()["lr_scheduler"]["scheduler"]
    assert type(scheduler).__name__ == "CosineAnnealingLR" and scheduler.T_max == epochs


def test_fit_logs_no_placeholder_metric(mnist_root, tmp_path):
    main(["fit", *mnist_args(mnist_root, tmp_path, "--trainer.max_epochs", "1")])
    (run,) = tmp_path.glob("mnist_logistic/version_*")
    events = EventAccumulator(str(run))
    events.Reload()
    assert "hp_metric" not in events.Tags()["scalars"] and "val/acc" in events.Tags()["scalars"]
    with pytest.raises(KeyError):  # no HParams record for the training run (an empty row in the dashboard)
        events.PluginTagToContent("hparams")
