"""Shared fixtures: a real MLflow SQLite store (created once) and a clean working directory."""

import pytest
from mlflow.tracking import MlflowClient

from harness.cli import quiet_libraries


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    # commands write mlflow.db, optuna.db and artifacts in the working directory
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "cache"))
    quiet_libraries()


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory) -> str:
    """One MLflow store for the session: creating one runs schema migrations (seconds)."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)  # the store fixes its default artifact root (./mlruns) from the cwd
        MlflowClient(uri).search_experiments()  # create the schema once, up front
    return uri


@pytest.fixture
def client(tracking_uri) -> MlflowClient:
    return MlflowClient(tracking_uri)
