"""The segmentation run whose encoder is reused: found from a model URI or a run id, loaded
from its checkpoint (a registered model is an exported graph, the run holds the weights)."""

from dataclasses import dataclass

import torch
from mlflow.exceptions import MlflowException

from harness.errors import HarnessError, user_error
from harness.models import UNet
from harness.names import Param
from harness.registry import uris
from harness.runs import load_run_model
from harness.tracking import Tracker


@dataclass(frozen=True)
class Source:
    """The segmentation run whose encoder is reused, and the model version it came from."""

    run_id: str
    params: dict[str, str]
    model_name: str | None = None
    model_version: str | None = None


def resolve_source(tracker: Tracker, model_uri: str | None, run_id: str | None) -> Source:
    """The run behind `--run-id`, or behind the `--model` URI (for a version, its source run)."""
    name = version = None
    if run_id is None:
        if model_uri is None:
            raise HarnessError("give --model models:/NAME@ALIAS or --run-id")
        model = uris.resolve(uris.parse(model_uri), tracker.client)
        name, version, run_id = model.name, model.version, model.run_id
        if not run_id:
            raise HarnessError(f"model {model_uri} (version {version}) names no source run")
    run = tracker.get_run(run_id)
    missing = [p for p in (Param.DEPTH, Param.BASE_CHANNELS) if p not in run.data.params]
    if missing:
        raise HarnessError(f"run {run_id} is not a training run: no param {missing[0]}")
    return Source(run_id, dict(run.data.params), name, version)


def load_encoder_source(tracker: Tracker, run_id: str, device: torch.device) -> UNet:
    """The run's UNet from its checkpoint (plain state dict, weights_only=True), frozen."""
    try:
        model = load_run_model(tracker, run_id, device)
    except MlflowException as error:
        raise user_error(f"run {run_id}: no usable checkpoint", error) from None
    return model.eval().requires_grad_(False)
