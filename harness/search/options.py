"""What a search is asked to do: each field is also its flag of `python -m harness.search`."""

from dataclasses import dataclass

from harness.cli import (
    cache_dir_option,
    compile_option,
    data_option,
    device_option,
    image_size_option,
    min_improvement_option,
    option,
    positive_int,
    precision_option,
    registered_model_option,
    storage_option,
    tracking_uri_option,
)
from harness.data import DEFAULT_SPEC
from harness.search.confirm import FinalSettings
from harness.search.spaces import DEFAULT_SPACE, PRUNERS
from harness.search.studies import DEFAULT_HEARTBEAT_S

FINAL = "confirmation and refit"  # the flags' group in the help


@dataclass(frozen=True)
class SearchOptions:
    trials: int = option(
        "--trials",
        type=positive_int,
        default=50,
        help="finished trials (complete or pruned) the study should reach",
    )
    space: str = option(
        "--space",
        default=DEFAULT_SPACE,
        help="search space: a name in search_spaces/ or a path to a .toml file",
    )
    data: str = data_option(DEFAULT_SPEC)
    image_size: int | None = image_size_option(None, "override the space file's image_size")
    cache_dir: str | None = cache_dir_option()
    max_epochs: int | None = option(
        "--max-epochs",
        type=positive_int,
        help="each trial's epoch budget, overriding the space file's (budget_images, max_epochs)",
    )
    pruner: str | None = option(
        "--pruner", choices=PRUNERS, help="override the space file's pruner"
    )
    study: str | None = option(
        "--study", help="study name (default: the space file's name); also the MLflow experiment"
    )
    storage: str = storage_option()
    tracking_uri: str = tracking_uri_option()
    seed: int = option(
        "--seed", type=int, default=0, help="seeds the sampler and each trial's training"
    )
    n_jobs: int = option(
        "--n-jobs", type=positive_int, default=1, help="trials run at once in this process"
    )
    timeout: float | None = option(
        "--timeout", type=float, help="stop starting new trials after this many seconds"
    )
    device: str = device_option(
        "auto, cpu, cuda or cuda:N; with several GPUs, auto spreads concurrent trials round-robin"
    )
    precision: str = precision_option()
    compile_model: bool = compile_option()
    heartbeat_s: int = option(
        "--heartbeat",
        type=positive_int,
        metavar="SECONDS",
        default=DEFAULT_HEARTBEAT_S,
        help="seconds between a trial's heartbeats; a trial silent for 4 heartbeats is failed "
        "and retried",
    )
    registered_model: str = registered_model_option(
        "MLflow registered model the best model is promoted to"
    )
    promote: bool = option(
        "--no-promote",
        default=True,
        action="store_false",
        help="do not register or promote the best model",
    )
    min_improvement: float = min_improvement_option()
    confirm_top: int = option(
        "--confirm-top",
        type=int,
        default=FinalSettings.confirm_top,
        group=FINAL,
        help="configurations of this many best complete trials are confirmed",
    )
    confirm_seeds: int = option(
        "--confirm-seeds",
        type=positive_int,
        default=FinalSettings.confirm_seeds,
        group=FINAL,
        help="more training seeds for each confirmed configuration",
    )
    confirm: bool = option(
        "--no-confirm",
        default=True,
        action="store_false",
        group=FINAL,
        help="no confirmation: the best trial is the winner",
    )
    refit: bool = option(
        "--no-refit",
        default=True,
        action="store_false",
        group=FINAL,
        help="no refit: the winner's run with the best validation metric is registered",
    )
    progress_bar: bool = option(
        "--no-progress", default=True, action="store_false", help="no progress bar (e.g. in logs)"
    )

    @property
    def final(self) -> FinalSettings:
        return FinalSettings(
            self.confirm_top if self.confirm else 0, self.confirm_seeds, self.refit
        )
