"""`python -m harness.train` end to end on a real MLflow SQLite store."""

import pytest
import torch

from harness.cli import run_main
from harness.models import UNet
from harness.names import Metric, Param, Tag
from harness.runs import train_tracked
from harness.tracking import Tracker, load_checkpoint
from harness.train import main
from harness.trainer import TrainConfig
from tests.helpers import running_runs, toy_splits

PER_EPOCH = [
    "train_loss",
    "val_loss",
    "train_iou",
    "val_iou",
    "train_accuracy",
    "val_accuracy",
    "val_fg_iou",
    "epoch_time_s",
]


def train_args(tracking_uri, experiment, *extra):
    return [
        "--data", "synthetic:48", "--image-size", "32", "--depth", "3", "--base-channels", "4",
        "--lr", "1e-3", "--batch-size", "16", "--patience", "3", "--aug-p", "0.2",
        "--max-epochs", "3", "--seed", "1",
        "--tracking-uri", tracking_uri, "--experiment", experiment, *extra,
    ]  # fmt: skip


def only_run(client, experiment):
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 1
    return runs[0]


def test_one_tracked_run_holds_params_metrics_and_artifacts(tracking_uri, client, tmp_path, capsys):
    assert run_main(main, train_args(tracking_uri, "demo")) == 0
    assert "split   accuracy  mean IoU   fg IoU\n" in capsys.readouterr().out

    run = only_run(client, "demo")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["depth"] == "3" and params["lr"] == "0.001" and params["batch_size"] == "16"
    assert params["patience"] == "3" and params["aug_p"] == "0.2" and params["seed"] == "1"
    assert params[Param.LR_SCHEDULE] == "constant"
    assert params["image_size"] == "32" and params["dataset"] == "synthetic:48"
    assert params[Param.COMPILED] == "False" and params[Param.PRECISION] in ("float32", "bfloat16")
    assert run.data.tags[Tag.DATASET_FINGERPRINT]

    epochs = int(run.data.metrics[Metric.EPOCHS_RUN])
    assert 1 <= epochs <= 3
    for name in PER_EPOCH:
        history = client.get_metric_history(run.info.run_id, name)
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(
            range(1, epochs + 1)
        ), name
    for name in (
        "test_iou",
        "test_accuracy",
        "test_fg_iou",
        "final_train_iou",
        "final_val_iou",
        "best_val_iou",
    ):
        assert 0.0 <= run.data.metrics[name] <= 1.0, name

    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert artifacts == {"figures/learning_curves.png", "figures/val_predictions.png"}
    path = client.download_artifacts(run.info.run_id, "checkpoint/model.pt", str(tmp_path))
    state = load_checkpoint(path)  # weights_only=True: a plain state dict
    model = UNet(depth=3, base_channels=4)
    model.load_state_dict(state)


def test_bad_data_gives_one_line_and_creates_no_run(tracking_uri, client, capsys):
    code = run_main(
        main, train_args(tracking_uri, "bad-data") + ["--data", "folder:/no/such/folder"]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "/no/such/folder" in err
    assert client.get_experiment_by_name("bad-data") is None


def test_divergence_ends_the_run_failed(tracking_uri, client, capsys):
    code = run_main(
        main, train_args(tracking_uri, "train-diverge") + ["--lr", "10", "--aug-p", "0"]
    )
    assert code == 2
    assert "diverged" in capsys.readouterr().err
    assert only_run(client, "train-diverge").info.status == "FAILED"


def test_ctrl_c_ends_the_run_killed(tracking_uri, client):
    tracker = Tracker(tracking_uri)
    experiment_id = tracker.experiment_id("interrupted")
    run_id = tracker.start_run(experiment_id, "ctrl-c")

    def press_ctrl_c(result):
        raise KeyboardInterrupt

    config = TrainConfig(depth=2, base_channels=4, max_epochs=3, aug_p=0.0)
    with pytest.raises(KeyboardInterrupt), tracker.run_status(run_id):
        train_tracked(
            tracker, run_id, config, toy_splits(), torch.device("cpu"), hooks=[press_ctrl_c]
        )
    assert client.get_run(run_id).info.status == "KILLED"
    assert not running_runs(client, experiment_id)


def test_help_documents_every_flag(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--data", "--image-size", "--depth", "--lr", "--batch-size", "--patience",
                 "--aug-p", "--max-epochs", "--lr-schedule", "--seed", "--device", "--tracking-uri", "--experiment"):  # fmt: skip
        assert flag in out
