"""The one model-URI rule set (`harness.registry.uris`): parsing is pure; resolution runs
against the session's real MLflow store, on versions registered without training."""

import uuid

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from harness import predict
from harness.cli import run_main
from harness.errors import HarnessError
from harness.finetune import load_unet
from harness.names import VersionTag
from harness.registry import uris
from harness.transfer import command as transfer

USAGE = "use models:/NAME@ALIAS, models:/NAME/VERSION or runs:/RUN_ID/PATH"


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        (
            "models:/unet@champion",
            uris.VersionRef("models:/unet@champion", "unet", alias="champion"),
        ),
        ("models:/unet/3", uris.VersionRef("models:/unet/3", "unet", number="3")),
        ("models:/unet/12/", uris.VersionRef("models:/unet/12/", "unet", number="12")),
        ("runs:/abc123/model", uris.RunRef("runs:/abc123/model", "abc123", "model")),
        ("runs:/abc123/a/b/", uris.RunRef("runs:/abc123/a/b/", "abc123", "a/b")),
    ],
)
def test_good_uris_parse(uri, expected):
    assert uris.parse(uri) == expected


@pytest.mark.parametrize(
    ("uri", "problem"),
    [
        ("models:/", "names no model"),
        ("models:/unet", "names no version"),
        ("models:/unet/latest", "has version 'latest', not a number"),
        ("models:/unet/Production", "has version 'Production', not a number"),
        ("models:/unet/1/2", "has too many parts"),
        ("models:/@champion", "has an empty name"),
        ("models:/unet@", "has an empty alias"),
        ("models:/unet@a@b", "has more than one @"),
        ("models:/team/unet@champion", "has a / in its name or alias"),
        ("runs:/abc123", "names no run or no artifact path"),
        ("runs:/", "names no run or no artifact path"),
        ("file:///tmp/model", "is neither models:/ nor runs:/"),
        ("harness-unet", "is neither models:/ nor runs:/"),
    ],
)
def test_each_bad_uri_is_one_line_naming_it_and_the_rules(uri, problem):
    with pytest.raises(HarnessError) as caught:
        uris.parse(uri)
    assert str(caught.value) == f"model URI {uri!r} {problem}: {USAGE}"


def test_the_default_model_is_the_champion_of_harness_unet():
    assert uris.CHAMPION_URI == "models:/harness-unet@champion"
    assert uris.parse(uris.alias_uri("x", "challenger")).alias == "challenger"
    assert uris.has_model_scheme("runs:/x") and not uris.has_model_scheme("some/folder")


@pytest.mark.parametrize("bad", ["team/unet", "unet@v1", "a:b", ""])
def test_a_registered_model_name_that_would_make_uris_ambiguous_is_refused(bad):
    with pytest.raises(HarnessError, match="invalid registered model name"):
        uris.check_model_name(bad)


# --- resolution ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registered(tracking_uri):
    """A registered model with version 1 (alias champion) tagged with its source run, and
    version 2 (alias plain) linked to a run by MLflow only."""
    client = MlflowClient(tracking_uri)
    experiment = client.create_experiment(f"uris-{uuid.uuid4().hex[:8]}")
    source, other = (client.create_run(experiment).info for _ in range(2))
    name = f"uris-{uuid.uuid4().hex[:8]}"
    client.create_registered_model(name)
    client.create_model_version(
        name,
        f"{other.artifact_uri}/model",
        run_id=other.run_id,
        tags={VersionTag.SOURCE_RUN_ID: source.run_id},
    )
    client.create_model_version(name, f"{other.artifact_uri}/model", run_id=other.run_id)
    client.set_registered_model_alias(name, "champion", "1")
    client.set_registered_model_alias(name, "plain", "2")
    return client, name, source.run_id, other.run_id


def test_an_alias_resolves_to_its_version_and_source_run(registered):
    client, name, source, _ = registered
    model = uris.resolve(uris.parse(f"models:/{name}@champion"), client)
    assert (model.name, model.version, model.run_id) == (name, "1", source)
    assert model.uri == f"models:/{name}@champion"
    assert model.location == client.get_model_version_download_uri(name, "1")


def test_a_version_number_resolves_and_without_our_tag_names_mlflow_s_run(registered):
    client, name, _, other = registered
    model = uris.resolve(uris.parse(f"models:/{name}/2"), client)
    assert (model.name, model.version, model.run_id) == (name, "2", other)
    assert uris.resolve(uris.parse(f"models:/{name}@plain"), client) == model.__class__(
        f"models:/{name}@plain", model.location, other, name, "2"
    )


def test_a_run_uri_resolves_to_itself_and_its_run(registered):
    client, _, source, _ = registered
    model = uris.resolve(uris.parse(f"runs:/{source}/model/"), client)
    assert (model.location, model.run_id, model.name) == (f"runs:/{source}/model", source, None)


@pytest.mark.parametrize(
    "make", [lambda n: f"models:/{n}@nobody", lambda n: f"models:/{n}/99",
             lambda n: "models:/no-such-model@champion", lambda n: "runs:/" + "0" * 32 + "/model"],
    ids=["alias", "version", "model", "run"],
)  # fmt: skip
def test_what_is_not_in_the_store_is_one_line_naming_the_uri_and_the_store(
    make, registered, tracking_uri
):
    client, name, _, _ = registered
    uri = make(name)
    with pytest.raises(HarnessError) as caught:
        uris.resolve(uris.parse(uri), client)
    message = str(caught.value)
    assert message.startswith(f"cannot load model {uri} from {tracking_uri}: ")
    assert "\n" not in message


# --- the same rules in every command ---------------------------------------------------------


def predict_command(uri, tracking_uri, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    argv = ["--model", uri, "--out", "m", str(tmp_path / "a.png"), "--tracking-uri", tracking_uri]
    return run_main(predict.main, argv)


def transfer_command(uri, tracking_uri, tmp_path):
    return run_main(transfer.main, ["--model", uri, "--tracking-uri", tracking_uri])


def finetune_call(uri, tracking_uri, tmp_path):
    return run_main(lambda _: load_unet(uri, tracking_uri), [])


@pytest.mark.parametrize("command", [predict_command, transfer_command, finetune_call])
@pytest.mark.parametrize("uri", ["models:/harness-unet/latest", "models:/harness-unet"])
def test_every_command_refuses_a_bad_uri_with_the_same_line(
    command, uri, tracking_uri, tmp_path, capsys
):
    code = command(uri, tracking_uri, tmp_path)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    with pytest.raises(HarnessError) as caught:
        uris.parse(uri)
    assert err[0].endswith(str(caught.value))
