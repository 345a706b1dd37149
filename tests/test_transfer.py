"""Transfer learning end to end: a tiny trained and registered UNet, its encoder, a species
classifier tracked in MLflow and linked to the model version. Real store, no mocks."""

import json
import uuid

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

from harness.cli import run_main
from harness.data import load_splits
from harness.names import Tag
from harness.registry.promotion import promote_run
from harness.runs import log_evaluation, train_tracked
from harness.tracking import Tracker
from harness.trainer import TrainConfig
from harness.transfer import TransferOptions, classifier, command, features, run_transfer

DATA, IMAGE_SIZE = "synthetic:96", 32
TINY = TrainConfig(depth=2, base_channels=4, batch_size=16, patience=1, aug_p=0.0, max_epochs=1)


CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def champion(tracking_uri, tmp_path_factory):
    """A registered model: one epoch of real training on generated cats and dogs."""
    tracker = Tracker(tracking_uri)
    splits = load_splits(DATA, IMAGE_SIZE, cache_dir=tmp_path_factory.mktemp("cache"))
    run_id = tracker.start_run(tracker.experiment_id("transfer-tests"), "tiny", {Tag.ROLE: "train"})
    with tracker.run_status(run_id):
        fit = train_tracked(tracker, run_id, TINY, splits, CPU)
        log_evaluation(tracker, run_id, fit.model, splits, CPU)
    name = f"transfer-{uuid.uuid4().hex[:8]}"
    version = promote_run(tracker, run_id, name).version
    return name, version, run_id, splits


def test_transfer_run_logs_per_class_accuracy_and_confusion_matrix(
    champion, tracking_uri, client, tmp_path
):
    name, version, source_run_id, splits = champion
    result = run_transfer(
        TransferOptions(model=f"models:/{name}@champion", tracking_uri=tracking_uri, device="cpu")
    )
    assert result.source.run_id == source_run_id
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert client.get_experiment(run.info.experiment_id).name == "harness-transfer"
    metrics = run.data.metrics
    for split in ("train", "val", "test"):
        for metric in ("accuracy", "balanced_accuracy"):
            assert 0 <= metrics[f"{split}_{metric}"] <= 1
    cats, dogs = np.bincount(splits.test.species, minlength=2)
    assert ("test_accuracy_cat" in metrics) == (cats > 0)
    assert ("test_accuracy_dog" in metrics) == (dogs > 0)
    assert run.data.params["dataset"] == DATA and run.data.params["image_size"] == str(IMAGE_SIZE)
    assert run.data.params["features"] == features.DEFAULT_FEATURES
    inputs = run.inputs.dataset_inputs  # the splits it fitted and scored on
    assert sorted(i.tags[0].value for i in inputs) == ["test", "train", "validation"]
    assert {i.dataset.digest for i in inputs} == {splits.fingerprint}

    tags = run.data.tags
    assert tags["harness.model_name"] == name
    assert tags["harness.model_version"] == version
    assert tags["harness.source_run_id"] == source_run_id
    assert client.get_model_version(name, version).tags["harness.transfer_run_id"] == result.run_id

    artifacts = {a.path for a in client.list_artifacts(result.run_id, "figures")}
    assert "figures/confusion_matrix.png" in artifacts
    path = client.download_artifacts(result.run_id, "confusion_matrix.json", str(tmp_path))
    with open(path) as file:
        matrix = json.load(file)
    assert matrix["labels"] == ["cat", "dog"]
    assert np.array(matrix["rows_true_columns_predicted"]).sum(axis=1).tolist() == [cats, dogs]


def test_the_cli_by_run_id_prints_the_table(champion, tracking_uri, capsys):
    _, _, run_id, _ = champion
    code = run_main(command.main, ["--run-id", run_id, "--tracking-uri", tracking_uri,
                                    "--features", "masked+pooled", "--levels", "1", "--device", "cpu"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0
    assert "balanced" in out and "test" in out


def test_unresolvable_models_are_one_line_errors(champion, tracking_uri, capsys):
    name, _, _, _ = champion
    for model in (f"models:/{name}@nobody", f"models:/{name}/99", "runs:/abc/model", "models:/x"):
        code = run_main(command.main, ["--model", model, "--tracking-uri", tracking_uri])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and model in err[0], err
    code = run_main(command.main, ["--run-id", "0" * 32, "--tracking-uri", tracking_uri])
    assert code == 2 and "no MLflow run" in capsys.readouterr().err
    code = run_main(command.main, ["--features", "masked+colour", "--tracking-uri", tracking_uri])
    assert code == 2 and "colour" in capsys.readouterr().err


def test_balanced_weights_keep_the_minority_class():
    """The original classifier collapsed onto cats (dogs 0.13); with 9 cats per dog and a weak
    cue, an unweighted regression does the same and the balanced one does not."""
    rng = np.random.default_rng(0)

    def sample(n):
        y = (rng.random(n) < 0.1).astype(int)
        return rng.normal(0, 1, (n, 5)) + 0.6 * y[:, None], y

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = sample(600), sample(200), sample(400)
    fitted, _ = classifier.fit_classifier(train_x, train_y, val_x, val_y)
    balanced = classifier.species_scores(test_y, fitted.predict(test_x))
    plain = LogisticRegression().fit(train_x, train_y)
    collapsed = classifier.species_scores(test_y, plain.predict(test_x))
    assert collapsed.per_class["dog"] < 0.3
    assert balanced.per_class["dog"] > 0.6 and balanced.per_class["cat"] > 0.6


def test_grid_features_do_not_depend_on_which_way_the_pet_faces():
    generator = torch.Generator().manual_seed(0)
    feature = torch.randn(1, 4, 8, 8, generator=generator)
    pet = torch.zeros(1, 1, 32, 32)
    pet[0, 0, 8:20, 4:26] = 1.0  # an off-centre box: x 4..26, y 8..20
    pet[0, 0, 8:12, 4:8] = 0.0  # and not symmetric inside it
    boxes = features.pet_boxes(pet)
    assert boxes.tolist() == [[0, 4, 8, 26, 20]]
    weight = torch.nn.functional.adaptive_avg_pool2d(pet, (8, 8))
    facing_right = features.grid_features(feature, weight, boxes, 32)
    mirrored = features.pet_boxes(pet.flip(-1))
    facing_left = features.grid_features(feature.flip(-1), weight.flip(-1), mirrored, 32)
    assert facing_right.shape == (1, 2 * 4 * features.GRID**2)
    torch.testing.assert_close(facing_right, facing_left)
    # a pet the model does not see: the box is the whole image
    assert features.pet_boxes(torch.zeros(1, 1, 32, 32)).tolist() == [[0, 0, 0, 32, 32]]
