"""Model Registry reads and writes: versions, their tags and description, the aliases.

Every call goes through an explicit `MlflowClient` (the tracker's): MLflow's fluent API would
use the process-global tracking URI and active-run stack. What the tags say is decided
elsewhere (`harness.registry.promotion`); this module only puts them in the store.
"""

import json
import math
from contextlib import suppress

from mlflow.entities import LoggedModel
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_MODEL_VERSIONS

from harness.errors import user_error
from harness.names import CHALLENGER, CHAMPION, VersionTag

REGISTERED_MODEL_DESCRIPTION = (
    "UNet foreground-vs-background segmentation from harness. pyfunc predict: float32 images "
    "(N, 3, S, S) in [0, 1] -> float32 foreground probabilities (N, 1, S, S); S is image_size "
    "in the model metadata."
)


def call(operation):
    """A store call; its MlflowException becomes one line for the user."""
    try:
        return operation()
    except MlflowException as error:
        raise user_error("model registry", error) from None


# --- reads -----------------------------------------------------------------------------------


def model_exists(client: MlflowClient, model_name: str) -> bool:
    try:
        client.get_registered_model(model_name)
    except MlflowException as error:
        if error.error_code == "RESOURCE_DOES_NOT_EXIST":
            return False
        raise
    return True


def version_of_run(client: MlflowClient, model_name: str, run_id: str):
    """The newest version registered from `run_id`, or None."""
    if not model_exists(client, model_name):
        return None
    versions = client.search_model_versions(
        f"name = '{_quote(model_name)}' and run_id = '{_quote(run_id)}'"
    )
    versions = [v for v in versions if v.tags.get(VersionTag.SOURCE_RUN_ID) == run_id]
    return max(versions, key=lambda v: int(v.version), default=None)


def champion(client: MlflowClient, model_name: str):
    """The version holding the champion alias, or None."""
    if not model_exists(client, model_name):
        return None
    if CHAMPION not in client.get_registered_model(model_name).aliases:
        return None
    return client.get_model_version_by_alias(model_name, CHAMPION)


def source_run_id(version) -> str:
    """The training run a version was made from (our tag; MLflow's own run link otherwise)."""
    return version.tags.get(VersionTag.SOURCE_RUN_ID) or version.run_id


def recorded_score(version) -> float | None:
    """The test score recorded on a version: None when missing, unreadable or not finite."""
    try:
        value = float(version.tags.get(VersionTag.SCORE))
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


# --- writes ----------------------------------------------------------------------------------


def register_version(
    client: MlflowClient,
    model_name: str,
    logged: LoggedModel,
    *,
    tags: dict[str, str],
    description: str,
    promoted: bool,
) -> str:
    """A new version of `model_name` for the logged model, with its tags and aliases; if any
    step fails, the version (and a registered model created here) is deleted again."""
    created_model, version = False, None
    try:
        if not model_exists(client, model_name):
            try:
                client.create_registered_model(model_name, description=REGISTERED_MODEL_DESCRIPTION)
                created_model = True
            except MlflowException:
                if not model_exists(client, model_name):  # not a lost race: a real error
                    raise
        version = client.create_model_version(
            model_name,
            # the artifact location, not models:/<model_id>: MLflow 3.17's SQL registry resolves
            # the latter through the process-global tracking URI, not this client's
            source=logged.artifact_location,
            run_id=logged.source_run_id,
            tags=tags,
            description=description,
            model_id=logged.model_id,
        ).version
        client.set_logged_model_tags(
            logged.model_id,
            {MLFLOW_MODEL_VERSIONS: json.dumps([{"name": model_name, "version": version}])},
        )
        set_aliases(client, model_name, version, promoted)  # champion last
        return str(version)
    except BaseException:
        # best effort: the original error is the one to report, not the clean-up's
        if version is not None:
            with suppress(Exception):
                client.delete_model_version(model_name, version)
        if created_model:
            with suppress(Exception):
                client.delete_registered_model(model_name)
        raise


def record_decision(
    client: MlflowClient, model_name: str, version: str, tags: dict[str, str], description: str
) -> None:
    """Rewrite an existing version's decision: its tags and description."""
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.update_model_version(model_name, version, description=description)


def set_aliases(client: MlflowClient, model_name: str, version: str, promoted: bool) -> None:
    client.set_registered_model_alias(model_name, CHALLENGER, version)
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION, version)


def _quote(text: str) -> str:
    return text.replace("'", "\\'")
