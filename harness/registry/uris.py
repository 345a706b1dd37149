"""The model URIs every command takes: one set of rules, one resolver.

    models:/NAME@ALIAS     the version an alias points to (champion, challenger)
    models:/NAME/VERSION   a version by its number
    runs:/RUN_ID/PATH      the model logged at PATH in a run's artifacts

`harness.predict`, `harness.finetune` and `harness.transfer` read `--model` (or their argument)
with `parse` and `resolve`; `harness.promote` prints one with `alias_uri`. Predict and finetune
load the model itself, and also take a local model folder; transfer needs the training run
behind it (`ResolvedModel.run_id`) for its checkpoint.

Left out, though MLflow accepts them: `models:/NAME/latest` and `models:/NAME/STAGE` (the
highest version number, or one of MLflow's deprecated stages, does not say which version is
meant to be used; here the champion and challenger aliases say that), and `models:/MODEL_ID`
(a logged model that is no registered version; refusing it also makes a `models:/NAME` whose
version was forgotten fail as such, not as an unknown model id).

Resolution goes through the caller's `MlflowClient`: MLflow's own resolution of models:/ URIs
asks the process-global registry URI, whatever tracking URI it is given.
"""

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from harness.errors import HarnessError, user_error
from harness.names import CHAMPION, DEFAULT_REGISTERED_MODEL
from harness.registry.store import source_run_id

MODELS, RUNS = "models:/", "runs:/"
FORMS = f"{MODELS}NAME@ALIAS, {MODELS}NAME/VERSION or {RUNS}RUN_ID/PATH"
USAGE = f"use {FORMS}"


@dataclass(frozen=True)
class VersionRef:
    """A registered model version, by alias or by number (exactly one of them)."""

    uri: str  # as the user wrote it
    name: str
    alias: str | None = None
    number: str | None = None


@dataclass(frozen=True)
class RunRef:
    """A model logged in a run's artifacts."""

    uri: str
    run_id: str
    path: str


ModelRef = VersionRef | RunRef


@dataclass(frozen=True)
class ResolvedModel:
    uri: str  # as the user wrote it
    location: str  # the artifact URI the model downloads from
    run_id: str | None  # the training run behind it; None if a version names none
    name: str | None = None  # the registered model and version, for models:/ URIs
    version: str | None = None


def alias_uri(model_name: str, alias: str) -> str:
    return f"{MODELS}{model_name}@{alias}"


CHAMPION_URI = alias_uri(DEFAULT_REGISTERED_MODEL, CHAMPION)


def check_model_name(model_name: str) -> None:
    # "/" and ":" MLflow refuses; "@" would make models:/NAME@ALIAS ambiguous
    if not model_name or any(c in model_name for c in "/:@"):
        raise HarnessError(
            f"invalid registered model name {model_name!r}: it cannot be empty or contain / : @"
        )


def has_model_scheme(text: str) -> bool:
    """Whether `text` is meant as a model URI (well-formed or not), not as a path."""
    return text.startswith((MODELS, RUNS))


def parse(uri: str) -> ModelRef:
    """The URI's parts, or a HarnessError saying what is wrong with it and what is accepted.
    Pure: it needs no store, so a malformed URI fails before anything is opened."""

    def bad(problem: str) -> HarnessError:
        return HarnessError(f"model URI {uri!r} {problem}: {USAGE}")

    if uri.startswith(MODELS):
        rest = uri.removeprefix(MODELS).strip("/")
        if not rest:
            raise bad("names no model")
        if "@" in rest:
            name, alias = rest.split("@", 1)
            if not name:
                raise bad("has an empty name")
            if not alias:
                raise bad("has an empty alias")
            if "@" in alias:
                raise bad("has more than one @")
            if "/" in name + alias:
                raise bad("has a / in its name or alias")
            return VersionRef(uri, name, alias=alias)
        parts = rest.split("/")
        if len(parts) == 1:
            raise bad("names no version")
        if len(parts) > 2:
            raise bad("has too many parts")
        name, number = parts
        if not (number.isascii() and number.isdigit()):
            raise bad(f"has version {number!r}, not a number")
        return VersionRef(uri, name, number=number)
    if uri.startswith(RUNS):
        run_id, _, path = uri.removeprefix(RUNS).strip("/").partition("/")
        if not run_id or not path.strip("/"):
            raise bad("names no run or no artifact path")
        return RunRef(uri, run_id, path.strip("/"))
    raise bad(f"is neither {MODELS} nor {RUNS}")


def resolve(ref: ModelRef, client: MlflowClient) -> ResolvedModel:
    """Where the model is and the run behind it, looked up with `client`; a name, alias,
    version or run that is not there is a HarnessError naming the URI and the store."""
    try:
        if isinstance(ref, RunRef):
            client.get_run(ref.run_id)  # an unknown run fails here, not in a download
            return ResolvedModel(ref.uri, f"{RUNS}{ref.run_id}/{ref.path}", ref.run_id)
        if ref.alias is not None:
            found = client.get_model_version_by_alias(ref.name, ref.alias)
        else:
            found = client.get_model_version(ref.name, ref.number)
        version = str(found.version)
        location = client.get_model_version_download_uri(ref.name, version)
        return ResolvedModel(ref.uri, location, source_run_id(found) or None, ref.name, version)
    except MlflowException as error:
        raise user_error(f"cannot load model {ref.uri} from {client.tracking_uri}", error) from None
