"""A run's checkpoint as an MLflow logged model: `Sequential(UNet, Sigmoid)` exported with
`torch.export` ("pt2"), through `mlflow.pytorch.save_model(..., serialization_format="pt2")`.

Why "pt2":

* The alternative, MLflow's default pickle format, stores the whole `nn.Module` with
  cloudpickle; loading it unpickles arbitrary objects (MLflow 3.17 itself refuses unless
  `MLFLOW_ALLOW_PICKLE_DESERIALIZATION` is set).
* "pt2" stores a traced graph plus raw tensors. Before `torch.export.load`, MLflow 3.17's
  loader (`mlflow.pytorch._validate_pt2_archive_is_pickle_free`) checks every record of the
  archive: raw tensor bytes, JSON/text metadata, or accepted by `torch.load(weights_only=True)`;
  anything else is refused. So `mlflow.pyfunc.load_model` / `mlflow.pytorch.load_model`
  never unpickle arbitrary objects, and the source checkpoint (a plain state dict) is read
  with `weights_only=True` too.
* A "models from code" pyfunc (a Python file that rebuilds the UNet from a state dict) would
  also avoid pickle, but it is not a PyTorch-flavour model, and serving it needs this package
  importable; the exported graph needs only torch, and `mlflow.pytorch.load_model` gives a
  module back.

The export is in eval mode, for the image size the run was trained at (the signature fixes
H = W = `image_size`; the batch dimension is dynamic). So

    mlflow.pyfunc.load_model("models:/harness-unet@champion").predict(images)

takes float32 images (N, 3, S, S) in [0, 1] and returns float32 per-pixel foreground
probabilities (N, 1, S, S) in [0, 1]; threshold at 0.5 for a mask. S is `image_size` in the
model's metadata (`harness.predict` resizes to it and back).
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.entities import LoggedModel, LoggedModelOutput, LoggedModelStatus
from mlflow.models import Model, ModelSignature
from mlflow.tracking import MlflowClient
from mlflow.types import Schema, TensorSpec
from torch import nn

from harness.errors import HarnessError, user_error
from harness.models import UNet
from harness.names import LOGGED_MODEL_NAME, Param
from harness.registry.source import SourceRun
from harness.registry.store import call
from harness.tracking import Tracker

# torch.export keeps a dimension of size 1 static: the example needs two images for a
# dynamic batch dimension.
EXAMPLE_BATCH = 2
MLMODEL_FILE = "MLmodel"


def load_source_model(tracker: Tracker, source: SourceRun) -> UNet:
    """The run's checkpoint (a plain state dict, read with weights_only=True) in a CPU UNet."""
    try:
        model = UNet(source.depth, source.base_channels)
    except ValueError as error:
        raise HarnessError(f"run {source.run_id}: {error}") from None
    call(lambda: tracker.load_checkpoint_into(source.run_id, model))
    return model.eval()


def signature(image_size: int) -> ModelSignature:
    float32 = np.dtype(np.float32)
    return ModelSignature(
        inputs=Schema([TensorSpec(float32, (-1, 3, image_size, image_size))]),
        outputs=Schema([TensorSpec(float32, (-1, 1, image_size, image_size))]),
    )


def input_example(image_size: int) -> np.ndarray:
    # a flat mid-grey batch: short to store as JSON, still a valid input
    return np.full((EXAMPLE_BATCH, 3, image_size, image_size), 0.5, np.float32)


def save_pyfunc_model(unet: UNet, source: SourceRun, path: Path) -> None:
    """Export `Sequential(unet, Sigmoid)` as an MLflow PyTorch model ("pt2") at `path`."""
    probabilities = nn.Sequential(unet, nn.Sigmoid()).eval()
    try:
        mlflow.pytorch.save_model(
            probabilities,
            str(path),
            signature=signature(source.image_size),
            input_example=input_example(source.image_size),
            serialization_format="pt2",
            # explicit: inferring them would load the model in a subprocess
            pip_requirements=[
                f"torch=={torch.__version__.split('+')[0]}",
                f"numpy=={np.__version__}",
            ],
            metadata={
                Param.IMAGE_SIZE: source.image_size,
                "output": "foreground probability per pixel, float32 (N, 1, S, S) in [0, 1]",
                Param.DEPTH: source.depth,
                Param.BASE_CHANNELS: source.base_channels,
                "source_run_id": source.run_id,
                "dataset_fingerprint": source.fingerprint,
            },
        )
    except Exception as error:  # torch.export failures are many types
        raise user_error(f"run {source.run_id}: cannot export the model", error) from None
    # The graph was exported on the CPU and an exported graph cannot move; without this, pyfunc
    # would load it on "cuda" wherever CUDA is available, and fail.
    mlmodel = Model.load(str(path))
    mlmodel.flavors[mlflow.pyfunc.FLAVOR_NAME][mlflow.pyfunc.MODEL_CONFIG] = {"device": "cpu"}
    mlmodel.save(str(path / MLMODEL_FILE))


@contextmanager
def logged_model(client: MlflowClient, source: SourceRun, unet: UNet) -> Iterator[LoggedModel]:
    """`unet` exported and logged as a READY logged model of the source run, for the block to
    register. If logging or the block fails, the logged model is deleted again: a promotion
    leaves all of its records or none. Export errors come before anything is created."""
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        save_pyfunc_model(unet, source, model_dir)
        logged = client.create_logged_model(
            source.experiment_id,
            name=LOGGED_MODEL_NAME,
            source_run_id=source.run_id,
            params=source.params,
        )
        try:
            # the saved MLmodel must name the logged model it now belongs to
            mlmodel = Model.load(str(model_dir))
            mlmodel.model_id = mlmodel.model_uuid = logged.model_id
            mlmodel.run_id = source.run_id
            mlmodel.artifact_path = logged.artifact_location
            mlmodel.save(str(model_dir / MLMODEL_FILE))
            client.log_model_artifacts(logged.model_id, str(model_dir))
            client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
            client.log_outputs(source.run_id, [LoggedModelOutput(logged.model_id, step=0)])
            yield logged
        except BaseException:
            with suppress(Exception):  # best effort: report the original error
                client.delete_logged_model(logged.model_id)
            raise
