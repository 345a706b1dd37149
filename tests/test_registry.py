"""Registry promotion end to end: real MLflow SQLite store, real (tiny) trainings, no mocks.

Each test uses its own registered-model name: the store is shared by the whole session.
"Worse" and "better" models are real trained models whose `test_iou` (the score the decision
reads) is then overwritten with a chosen value.
"""

import uuid
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest
import torch
from mlflow.exceptions import MlflowException

from harness import promote
from harness.cli import run_main
from harness.errors import HarnessError
from harness.models import UNet
from harness.names import CHALLENGER, CHAMPION, Artifact, Tag, TrialAttr, VersionTag
from harness.registry.promotion import Promotion, promote_run
from harness.runs import log_evaluation, train_tracked
from harness.search import SearchOptions, run_search
from harness.tracking import Tracker
from harness.trainer import TrainConfig
from tests.helpers import toy_splits

TINY = TrainConfig(depth=2, base_channels=4, batch_size=16, patience=1, aug_p=0.0, max_epochs=1)
EXPERIMENT = "registry-tests"
OTHER_FINGERPRINT = "0ther0000000data"

TINY_SPACE = """
[study]
max_epochs = 1
image_size = 32
sampler_startup_trials = 2
pruner = "none"

[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true

[fixed]
depth = 2
base_channels = 4
batch_size = 16
patience = 1
aug_p = 0.0
"""


@pytest.fixture(scope="module")
def splits():
    return toy_splits()


@pytest.fixture
def tracker(tracking_uri) -> Tracker:
    return Tracker(tracking_uri)


@pytest.fixture
def name() -> str:
    return f"unet-{uuid.uuid4().hex[:8]}"


def trained_run(
    tracker, splits, test_iou=None, fingerprint=None, evaluate=True, seed=0, per_image=None
) -> str:
    """A finished `harness.train`-like run: real training, checkpoint, test scores (`test_iou`
    and each test image's, `per_image`, overwritten with chosen values when given)."""
    run_id = tracker.start_run(tracker.experiment_id(EXPERIMENT), "tiny", tags={Tag.ROLE: "train"})
    device = torch.device("cpu")
    with tracker.run_status(run_id):
        result = train_tracked(tracker, run_id, replace(TINY, seed=seed), splits, device)
        if evaluate:
            log_evaluation(tracker, run_id, result.model, splits, device)
    if test_iou is not None:
        tracker.log(run_id, {"test_iou": test_iou})
    if per_image is not None:
        tracker.log_per_image(run_id, splits.test.names, per_image)
    if fingerprint is not None:
        tracker.log(run_id, tags={Tag.DATASET_FINGERPRINT: fingerprint})
    return run_id


def aliases(client, name) -> dict[str, str]:
    return {
        alias: str(version) for alias, version in client.get_registered_model(name).aliases.items()
    }


def versions(client, name) -> list:
    return client.search_model_versions(f"name = '{name}'")


def cli(argv, capsys) -> tuple[int, str, str]:
    code = run_main(promote.main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_first_promotion_is_champion_and_version_carries_its_record(tracker, splits, name, client):
    run_id = trained_run(tracker, splits, test_iou=0.5)

    promotion = promote_run(tracker, run_id, name)

    assert promotion == Promotion("1", True, "first champion", 0.5, None)
    assert aliases(client, name) == {CHAMPION: "1", CHALLENGER: "1"}
    version = client.get_model_version(name, "1")
    tags = version.tags
    assert tags[VersionTag.SOURCE_RUN_ID] == run_id
    assert tags[VersionTag.DATASET_FINGERPRINT] == splits.fingerprint
    assert tags["param.depth"] == "2" and tags["param.image_size"] == "32"
    assert float(tags["metric.test_iou"]) == 0.5
    assert "metric.final_val_iou" in tags and "metric.test_accuracy" in tags
    assert "metric.train_loss" not in tags  # per-epoch series are not version facts
    assert tags[VersionTag.PROMOTED] == "true"
    assert tags[VersionTag.DECISION] == "first champion"
    assert tags[VersionTag.CHAMPION_SCORE] == "none"
    # a plain training run belongs to no study
    assert VersionTag.STUDY not in tags and VersionTag.TRIAL_NUMBER not in tags
    assert "first champion" in version.description and "0.5000" in version.description
    assert version.run_id == run_id
    # the run links to its logged model
    assert tracker.client.get_run(run_id).outputs.model_outputs


def test_only_a_challenger_better_beyond_the_noise_takes_champion(
    tracker, splits, name, client, capsys
):
    images = len(splits.test)
    champion = np.full(images, 0.5)
    promote_run(tracker, trained_run(tracker, splits, test_iou=0.5, per_image=champion), name)

    # higher on the test split, but image by image as often worse as better: noise
    noisy = champion + np.tile([0.08, -0.07], images // 2)
    inside = promote_run(
        tracker, trained_run(tracker, splits, test_iou=0.51, per_image=noisy, seed=1), name
    )
    assert (inside.version, inside.promoted, inside.score, inside.champion_score) == (
        "2",
        False,
        0.51,
        0.5,
    )
    assert inside.reason.startswith("not better beyond the noise: 0.5100 vs 0.5000 (champion v1)")
    assert inside.difference.low < 0 < inside.difference.high
    assert inside.difference.mean == pytest.approx(0.005)
    assert aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
    record = client.get_model_version(name, "2")
    assert record.tags[VersionTag.PROMOTED] == "false"
    assert float(record.tags[VersionTag.SCORE]) == 0.51
    assert float(record.tags[VersionTag.CHAMPION_SCORE]) == 0.5
    assert record.tags[VersionTag.CHAMPION_VERSION] == "1"
    assert float(record.tags[VersionTag.DIFF_MEAN]) == pytest.approx(0.005)
    assert float(record.tags[VersionTag.DIFF_CI_LOW]) == inside.difference.low
    assert float(record.tags[VersionTag.DIFF_CI_HIGH]) == inside.difference.high
    assert record.tags[VersionTag.DECISION] == inside.reason
    assert "stays challenger" in record.description and "0.5100" in record.description

    # better on every image: the whole interval lies above zero
    clear = champion + np.linspace(0.02, 0.06, images)
    better = promote_run(
        tracker, trained_run(tracker, splits, test_iou=0.54, per_image=clear, seed=2), name
    )
    assert better.promoted and better.version == "3"
    assert better.difference.low > 0
    assert better.reason.startswith("better beyond the noise: 0.5400 vs 0.5000 (champion v1)")
    assert aliases(client, name) == {CHAMPION: "3", CHALLENGER: "3"}
    assert "promoted to champion" in client.get_model_version(name, "3").description
    out = capsys.readouterr().out
    assert "version 2 stays challenger: not better beyond the noise" in out
    assert "version 3 is the champion: better beyond the noise" in out

    # a margin raises the bar: +0.04 on average is not +0.05
    margin = promote_run(
        tracker,
        trained_run(tracker, splits, test_iou=0.58, per_image=clear + 0.04, seed=3),
        name,
        min_improvement=0.05,
    )
    assert not margin.promoted
    assert margin.difference.low > 0 and margin.reason.endswith("not > 0.05")
    assert aliases(client, name)[CHAMPION] == "3"


def test_a_champion_without_per_image_scores_is_not_compared_unless_forced(
    tracker, splits, name, client
):
    # a run scored before per-image scores were logged
    old = trained_run(tracker, splits, evaluate=False)
    tracker.log(old, {"test_iou": 0.5})
    promote_run(tracker, old, name)

    challenger = trained_run(tracker, splits, test_iou=0.9, seed=1)
    decision = promote_run(tracker, challenger, name)
    assert not decision.promoted
    assert decision.reason == "not compared: champion v1 has no per-image test scores"
    forced = promote_run(tracker, challenger, name, force=True)
    assert forced.promoted and forced.reason.startswith("forced: not compared")


def test_model_trained_on_other_data_is_not_compared_unless_forced(
    tracker, splits, name, client, capsys, tracking_uri
):
    promote_run(tracker, trained_run(tracker, splits, test_iou=0.5), name)
    other = trained_run(tracker, splits, test_iou=0.9, fingerprint=OTHER_FINGERPRINT, seed=1)

    promotion = promote_run(tracker, other, name)
    assert not promotion.promoted
    assert promotion.reason == "not compared: champion v1 was trained on other data"
    assert aliases(client, name) == {CHAMPION: "1", CHALLENGER: "2"}
    assert (
        client.get_model_version(name, "2").tags[VersionTag.DATASET_FINGERPRINT]
        == OTHER_FINGERPRINT
    )
    capsys.readouterr()

    code, out, err = cli(
        ["--run-id", other, "--registered-model", name, "--tracking-uri", tracking_uri, "--force"],
        capsys,
    )
    assert (code, err) == (0, "")
    assert (
        "version 2 is the champion: forced over champion v1, which was trained on other data" in out
    )
    # the same run is not logged and registered twice
    assert len(versions(client, name)) == 2
    assert aliases(client, name) == {CHAMPION: "2", CHALLENGER: "2"}
    assert client.get_model_version(name, "2").tags[VersionTag.PROMOTED] == "true"

    again = promote_run(tracker, other, name)
    assert again == Promotion("2", True, "already the champion", 0.9, 0.9)


def test_champion_serves_foreground_probabilities_through_pyfunc(
    tracker, splits, name, tracking_uri, monkeypatch
):
    run_id = trained_run(tracker, splits)
    promote_run(tracker, run_id, name)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv(
        "MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false"
    )  # the safe default, explicitly

    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")

    assert model.metadata.metadata["image_size"] == 32
    assert model.metadata.metadata["output"].startswith("foreground probability per pixel")
    # exported on the CPU, where it stays even on a CUDA machine (an exported graph cannot move)
    assert model.model_config == {"device": "cpu"}
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 3, 32, 32)
    images = np.asarray(splits.test.images[:5], np.float32).transpose(0, 3, 1, 2) / 255
    probabilities = model.predict(images)
    assert probabilities.shape == (5, 1, 32, 32) and probabilities.dtype == np.float32
    assert probabilities.min() >= 0.0 and probabilities.max() <= 1.0
    assert model.predict(images[:1]).shape == (1, 1, 32, 32)  # the batch dimension is dynamic
    # the same numbers as the run's checkpoint, read with weights_only=True
    unet = tracker.load_checkpoint_into(run_id, UNet(2, 4))
    expected = torch.sigmoid(unet.eval()(torch.from_numpy(images))).detach().numpy()
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    # an exported graph, not a pickled module
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{name}@champion"))
    assert (local / "data" / "model.pt2").is_file() and not (local / "data" / "model.pth").exists()
    assert (local / "input_example.json").is_file()


def test_promote_cli_run_id(tracker, splits, name, client, tracking_uri, capsys):
    run_id = trained_run(tracker, splits)

    code, out, err = cli(
        ["--run-id", run_id, "--registered-model", name, "--tracking-uri", tracking_uri], capsys
    )

    assert (code, err) == (0, "")
    assert f"registered model '{name}' version 1 is the champion: first champion" in out
    assert aliases(client, name)[CHAMPION] == "1"


def test_promote_cli_study_promotes_the_best_trial(tmp_path, name, client, tracking_uri, capsys):
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    study = f"study-{name}"
    options = SearchOptions(
        space=str(space),
        data="synthetic:48",
        trials=2,
        study=study,
        storage=storage,
        tracking_uri=tracking_uri,
        promote=False,
        confirm=False,
        refit=False,
        progress_bar=False,
    )
    result = run_search(options)
    capsys.readouterr()
    assert not client.search_registered_models(f"name = '{name}'")  # --no-promote: nothing yet

    code, out, err = cli(
        [
            "--study",
            study,
            "--storage",
            storage,
            "--registered-model",
            name,
            "--tracking-uri",
            tracking_uri,
        ],
        capsys,
    )

    assert (code, err) == (0, "")
    assert "is the champion: first champion" in out
    best = result.study.best_trial
    tags = client.get_model_version_by_alias(name, CHAMPION).tags
    assert tags[VersionTag.SOURCE_RUN_ID] == best.user_attrs[TrialAttr.RUN_ID]
    assert tags[VersionTag.STUDY] == study
    assert tags[VersionTag.TRIAL_NUMBER] == str(best.number)
    assert "param.lr" in tags and "metric.test_iou" in tags


def bad_run_without_checkpoint(tracker, splits):
    run_id = tracker.start_run(tracker.experiment_id(EXPERIMENT), "no-checkpoint")
    tracker.log(
        run_id,
        {"test_iou": 0.5},
        params={"depth": 2, "base_channels": 4, "image_size": 32},
        tags={Tag.DATASET_FINGERPRINT: splits.fingerprint},
    )
    tracker.end_run(run_id, "FINISHED")
    return ["--run-id", run_id], "has no checkpoint"


def run_with_checkpoint_file(tracker, splits, write) -> str:
    """A run whose params say depth 2, base 4, with `write(path)` as its checkpoint file."""
    run_id = bad_run_without_checkpoint(tracker, splits)[0][1]
    path = Path.cwd() / Artifact.CHECKPOINT_FILE
    write(path)
    tracker.client.log_artifact(run_id, str(path), Artifact.CHECKPOINT_DIR)
    return run_id


def bad_run_with_corrupt_checkpoint(tracker, splits):
    run_id = run_with_checkpoint_file(tracker, splits, lambda p: p.write_bytes(b"not a torch file"))
    return ["--run-id", run_id], "unusable checkpoint: not a weights-only state dict"


def bad_run_with_a_tensor_for_checkpoint(tracker, splits):
    run_id = run_with_checkpoint_file(tracker, splits, lambda p: torch.save(torch.zeros(3), p))
    return ["--run-id", run_id], "unusable checkpoint: not a state dict"


def bad_run_with_another_architecture_s_checkpoint(tracker, splits):
    deeper = UNet(3, 4).state_dict()
    run_id = run_with_checkpoint_file(tracker, splits, lambda p: torch.save(deeper, p))
    return ["--run-id", run_id], "the checkpoint does not fit the model: Unexpected key(s)"


def bad_run_without_test_iou(tracker, splits):
    return ["--run-id", trained_run(tracker, splits, evaluate=False)], "has no test_iou"


def bad_unknown_run(tracker, splits):
    return ["--run-id", "0" * 32], "no MLflow run"


def bad_unknown_study(tracker, splits):
    storage = f"sqlite:///{Path.cwd() / 'optuna.db'}"
    optuna.create_study(study_name="some-other-study", storage=storage)
    return ["--study", "nope", "--storage", storage], "no study 'nope'"


def bad_study_without_completed_trial(tracker, splits):
    storage = f"sqlite:///{Path.cwd() / 'optuna.db'}"
    study = optuna.create_study(study_name="failing", storage=storage)
    study.tell(study.ask(), state=optuna.trial.TrialState.FAIL)
    return ["--study", "failing", "--storage", storage], "has no completed trial"


def bad_missing_storage(tracker, splits):
    return [
        "--study",
        "x",
        "--storage",
        f"sqlite:///{Path.cwd() / 'missing.db'}",
    ], "no Optuna storage"


@pytest.mark.parametrize(
    "make",
    [
        bad_unknown_run,
        bad_run_without_checkpoint,
        bad_run_with_corrupt_checkpoint,
        bad_run_with_a_tensor_for_checkpoint,
        bad_run_with_another_architecture_s_checkpoint,
        bad_run_without_test_iou,
        bad_unknown_study,
        bad_study_without_completed_trial,
        bad_missing_storage,
    ],
)
def test_bad_input_exits_2_with_one_line_and_registers_nothing(
    make, tracker, splits, name, client, tracking_uri, capsys
):
    argv, message = make(tracker, splits)
    capsys.readouterr()

    code, out, err = cli(
        [*argv, "--registered-model", name, "--tracking-uri", tracking_uri], capsys
    )

    assert code == 2
    assert err.count("\n") == 1 and err.startswith("error: ") and message in err
    assert "Traceback" not in err + out
    with pytest.raises(MlflowException):
        client.get_registered_model(name)


def test_invalid_model_name_is_refused_before_the_run_is_read(tracker):
    # "@" would make models:/NAME@ALIAS ambiguous; MLflow itself refuses "/" and ":"
    for bad in ("team/unet", "unet@v1", ""):
        with pytest.raises(HarnessError, match="invalid registered model name"):
            promote_run(tracker, "0" * 32, bad)
