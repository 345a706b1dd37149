"""A registered model back as a trainable `UNet`, to fine-tune or to inspect:

    from harness.finetune import load_unet
    unet = load_unet("models:/harness-unet@champion")  # a UNet with the champion's weights

The registry stores the model exported with `torch.export` (see `harness.registry`): loading
it never unpickles code, but what `mlflow.pytorch.load_model` gives back is a graph that
cannot train (`.train()` raises NotImplementedError). Its weights are plain tensors, so this
loads them into a freshly built `UNet` of the depth and width the model's metadata records.
"""

import mlflow.pytorch
from mlflow.models import Model
from torch import nn

from harness.errors import HarnessError
from harness.models import UNet
from harness.names import DEFAULT_TRACKING_URI, Param
from harness.predict import load_model
from harness.registry.uris import CHAMPION_URI


def load_unet(model_uri: str = CHAMPION_URI, tracking_uri: str = DEFAULT_TRACKING_URI) -> UNet:
    """The model's `UNet` with its weights, on the CPU and in training mode; its output is
    logits (the served model adds the sigmoid). `model_uri` follows the rules of
    `harness.registry.uris`, or is a local model folder, as for `harness.predict`."""
    exported, metadata = load_model(_graph_and_metadata, model_uri, tracking_uri)
    try:
        depth, base_channels = int(metadata[Param.DEPTH]), int(metadata[Param.BASE_CHANNELS])
    except (KeyError, TypeError, ValueError):
        raise HarnessError(
            f"model {model_uri} does not record its UNet's {Param.DEPTH} and "
            f"{Param.BASE_CHANNELS} (metadata): not a harness model"
        ) from None
    # the export is Sequential(UNet, Sigmoid): the same structure takes its state dict
    served = nn.Sequential(UNet(depth, base_channels), nn.Sigmoid())
    try:
        served.load_state_dict(exported.state_dict())
    except RuntimeError:
        raise HarnessError(f"model {model_uri}: its weights do not fit a UNet") from None
    return served[0].train()


def _graph_and_metadata(path: str):
    return mlflow.pytorch.load_model(path), Model.load(path).metadata or {}
