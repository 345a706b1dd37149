"""The options of `python -m harness.transfer`: each field is its flag."""

from dataclasses import dataclass

from harness.cli import (
    cache_dir_option,
    data_option,
    device_option,
    image_size_option,
    option,
    positive_int,
    tracking_uri_option,
)
from harness.names import TRANSFER_EXPERIMENT
from harness.registry import uris
from harness.transfer.features import DEFAULT_FEATURES, DEFAULT_LEVELS


@dataclass(frozen=True)
class TransferOptions:
    model: str | None = option(
        "--model",
        default=uris.CHAMPION_URI,
        help=f"{uris.FORMS} (of a runs:/ URI, the run's checkpoint is used), or --run-id instead",
    )
    run_id: str | None = option("--run-id", help="a training run instead of --model")
    tracking_uri: str = tracking_uri_option()
    data: str | None = data_option(None, "dataset spec (default: the source run's)")
    image_size: int | None = image_size_option(None, "default: the source run's")
    features: str = option(
        "--features",
        default=DEFAULT_FEATURES,
        help="how encoder features are pooled: pooled, masked and grid joined by +",
    )
    levels: int = option(
        "--levels", type=positive_int, default=DEFAULT_LEVELS, help="deepest encoder levels used"
    )
    experiment: str = option(
        "--experiment", default=TRANSFER_EXPERIMENT, help="MLflow experiment of the run"
    )
    device: str = device_option()
    cache_dir: str | None = cache_dir_option()
