"""Search-space files: read and validate a TOML recipe, turn it into `trial.suggest_*` calls.

A space file has a `[study]` table (metric, direction, sampler, pruner, max_epochs,
image_size, ...), one `[params.NAME]` table per searched parameter, a `[fixed]` table for
parameters held constant and any number of `[[enqueue]]` tables: known-good configurations
(a full or partial set of searched values) that every study of the space tries first, and a
`[refit]` table for settings the final model is refit with instead of its trial's (a wider
model than the trials, say). Every problem is reported as `FILE: KEY: what is wrong` before any
study or run exists.
"""

import math
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import optuna

from harness.errors import HarnessError
from harness.names import Metric
from harness.trainer import TrainConfig

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
DEFAULT_SPACE = "unet"

# Without rung_images, ASHA's first rung at this share of the epoch budget: epoch 1 of 8, 3 of
# 24, so that a rung follows about as many optimizer steps whatever the dataset's size
ASHA_FIRST_RUNG_SHARE = 1 / 8

# The TrainConfig fields a space may search or fix; the seed and max_epochs are study settings,
# and trials keep a constant learning rate (their epochs are selected on validation).
SEARCHABLE = tuple(
    f.name for f in fields(TrainConfig) if f.name not in ("seed", "max_epochs", "lr_schedule")
)
INT_PARAMS = {"depth", "base_channels", "batch_size", "patience"}

METRICS = {
    Metric.VAL_IOU: "maximize",
    Metric.VAL_FG_IOU: "maximize",
    Metric.VAL_ACCURACY: "maximize",
    Metric.VAL_LOSS: "minimize",
}
SAMPLERS = ("tpe", "random")
PRUNERS = ("median", "hyperband", "asha", "none")


class SpaceError(HarnessError):
    """A malformed search-space file."""


@dataclass(frozen=True)
class Distribution:
    name: str
    kind: str  # "int", "float" or "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial: optuna.Trial):
        if self.kind == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value) -> bool:
        if self.kind == "categorical":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(
            value, int if self.kind == "int" else int | float
        ):
            return False
        if not self.low <= value <= self.high:
            return False
        return self.step is None or math.isclose(
            (value - self.low) / self.step % 1, 0, abs_tol=1e-9
        )

    def describe(self) -> str:
        if self.kind == "categorical":
            return f"one of {list(self.choices)}"
        number = "an integer" if self.kind == "int" else "a number"
        step = "" if self.step is None else f" in steps of {self.step:g}"
        return f"{number} from {self.low:g} to {self.high:g}{step}"


@dataclass(frozen=True)
class StudySettings:
    metric: str = Metric.VAL_IOU
    direction: str = "maximize"
    sampler: str = "tpe"
    sampler_startup_trials: int = 10
    pruner: str = "asha"
    pruner_startup_trials: int = 5
    pruner_warmup_epochs: int = 0
    # asha and hyperband: each rung keeps the top 1/reduction_factor of the trials that reach it,
    # and the rungs sit reduction_factor times apart
    reduction_factor: int = 3
    max_epochs: int = 10
    # > 0: each trial's epoch budget is this many training images seen (small sets get more
    # passes), kept between min_epochs and max_epochs; 0: max_epochs whatever the data
    budget_images: int = 0
    min_epochs: int = 1
    # > 0: ASHA's first rung after this many training images seen (at least one epoch), so
    # that the rungs stay put when the budget grows; 0: at 1/8 of the epoch budget
    rung_images: int = 0
    image_size: int = 64

    def epochs(self, train_images: int) -> int:
        """Each trial's epoch budget on a training set of `train_images` images."""
        if not self.budget_images:
            return self.max_epochs
        return min(self.max_epochs, max(self.min_epochs, round(self.budget_images / train_images)))

    def first_rung(self, train_images: int | None, max_epochs: int) -> int:
        """The epoch of ASHA's first rung, before any warm-up, for a budget of `max_epochs`."""
        if self.rung_images and train_images:
            return min(max_epochs, max(1, round(self.rung_images / train_images)))
        return max(1, round(max_epochs * ASHA_FIRST_RUNG_SHARE))


@dataclass(frozen=True)
class SearchSpace:
    name: str
    path: Path
    study: StudySettings
    params: dict[str, Distribution]
    fixed: dict[str, Any] = field(default_factory=dict)
    enqueue: tuple[dict[str, Any], ...] = ()  # known-good configurations, tried first
    refit: dict[str, Any] = field(default_factory=dict)  # the refit's values instead of [fixed]

    def suggest(self, trial: optuna.Trial, *, seed: int, max_epochs: int) -> TrainConfig:
        """The trial is the only source of searched values; fixed ones come from the file."""
        values = {name: dist.suggest(trial) for name, dist in self.params.items()}
        return self.config(values, seed=seed, max_epochs=max_epochs)

    def config(self, params: dict[str, Any], *, seed: int, max_epochs: int) -> TrainConfig:
        """The configuration of a trial's params (searched values) with the file's fixed ones."""
        return TrainConfig(**self.fixed, **params, seed=seed, max_epochs=max_epochs)


def resolve_space_path(name_or_path: str) -> Path:
    """`unet` means search_spaces/unet.toml; anything with a suffix or a slash is a path."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return Path(name_or_path)
    return SPACES_DIR / f"{name_or_path}.toml"


def load_space(name_or_path: str = DEFAULT_SPACE) -> SearchSpace:
    path = resolve_space_path(name_or_path)
    try:
        document = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise SpaceError(f"{path}: no such search-space file") from None
    except tomllib.TOMLDecodeError as error:
        raise SpaceError(f"{path}: invalid TOML: {error}") from None

    def fail(key: str, problem: str):
        raise SpaceError(f"{path}: {key}: {problem}")

    for key in document:
        if key not in ("study", "params", "fixed", "enqueue", "refit"):
            fail(key, "unknown table (expected study, params, fixed, enqueue, refit)")
    study = _read_study(document.get("study", {}), fail)
    params = {
        name: _read_distribution(name, spec, fail)
        for name, spec in document.get("params", {}).items()
    }
    fixed = _read_values("fixed", document.get("fixed", {}), params, fail)
    refit = _read_values("refit", document.get("refit", {}), params, fail)
    # every combination the space can produce must make a valid config: check the corners,
    # and again with the refit's values where the space has any
    checks = [("params", fixed)] + ([("refit", {**fixed, **refit})] if refit else [])
    for table, values in checks:
        try:
            for corner in ("low", "high"):
                TrainConfig(**values, **{n: _corner(d, corner) for n, d in params.items()})
        except HarnessError as error:
            fail(table, str(error))
    enqueue = _read_enqueue(document.get("enqueue", []), params, fixed, fail)
    return SearchSpace(path.stem, path, study, params, fixed, enqueue, refit)


SEARCHED_TOO = {
    "fixed": "both searched and fixed",
    "refit": "searched: the refit trains the winner's value",
}


def _read_values(table_name: str, table: Any, params: dict[str, Distribution], fail) -> dict:
    """`[fixed]` or `[refit]`: values of parameters the space does not search."""
    if not isinstance(table, dict):
        fail(table_name, "must be a table")
    for name, value in table.items():
        key = f"{table_name}.{name}"
        if name not in SEARCHABLE:
            fail(key, f"unknown parameter (known: {', '.join(SEARCHABLE)})")
        if name in params:
            fail(key, SEARCHED_TOO[table_name])
        expected = int if name in INT_PARAMS else (int, float)
        if isinstance(value, bool) or not isinstance(value, expected):
            fail(key, f"expected a number, got {value!r}")
    return dict(table)


def _read_enqueue(tables: Any, params: dict[str, Distribution], fixed: dict, fail) -> tuple:
    """`[[enqueue]]` tables: each a full or partial set of searched values, in their ranges."""
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        fail("enqueue", "must be [[enqueue]] tables")
    for index, table in enumerate(tables):
        if not table:
            fail(f"enqueue[{index}]", "is empty")
        for name, value in table.items():
            key = f"enqueue[{index}].{name}"
            if name in fixed:
                fail(key, "is fixed in this space, not searched")
            if name not in params:
                fail(key, f"not a searched parameter (searched: {', '.join(params)})")
            if not params[name].contains(value):
                fail(key, f"expected {params[name].describe()}, got {value!r}")
    return tuple(dict(table) for table in tables)


def _corner(dist: Distribution, which: str):
    if dist.kind == "categorical":
        return dist.choices[0] if which == "low" else dist.choices[-1]
    value = dist.low if which == "low" else dist.high
    return int(value) if dist.kind == "int" else value


def _read_study(table: dict, fail) -> StudySettings:
    if not isinstance(table, dict):
        fail("study", "must be a table")
    defaults = StudySettings()
    known = {f.name for f in fields(StudySettings)}
    for key, value in table.items():
        if key not in known:
            fail(f"study.{key}", f"unknown setting (known: {', '.join(sorted(known))})")
        if type(value) is not type(getattr(defaults, key)):
            fail(f"study.{key}", f"expected {type(getattr(defaults, key)).__name__}, got {value!r}")
    settings = StudySettings(
        **{**{"direction": METRICS.get(table.get("metric", Metric.VAL_IOU), "maximize")}, **table}
    )
    if settings.metric not in METRICS:
        fail("study.metric", f"unknown metric {settings.metric!r} (known: {', '.join(METRICS)})")
    if settings.direction not in ("maximize", "minimize"):
        fail("study.direction", f"must be maximize or minimize, got {settings.direction!r}")
    if settings.direction != METRICS[settings.metric]:
        fail("study.direction", f"{settings.metric} should be {METRICS[settings.metric]}d")
    if settings.sampler not in SAMPLERS:
        fail(
            "study.sampler", f"unknown sampler {settings.sampler!r} (known: {', '.join(SAMPLERS)})"
        )
    if settings.pruner not in PRUNERS:
        fail("study.pruner", f"unknown pruner {settings.pruner!r} (known: {', '.join(PRUNERS)})")
    for key in ("max_epochs", "min_epochs", "image_size"):
        if getattr(settings, key) < 1:
            fail(f"study.{key}", "must be positive")
    for key in (
        "sampler_startup_trials",
        "pruner_startup_trials",
        "pruner_warmup_epochs",
        "budget_images",
        "rung_images",
    ):
        if getattr(settings, key) < 0:
            fail(f"study.{key}", "must not be negative")
    if settings.min_epochs > settings.max_epochs:
        fail("study.min_epochs", f"more than max_epochs ({settings.max_epochs})")
    if settings.reduction_factor < 2:
        fail("study.reduction_factor", "must be at least 2")
    return settings


def _read_distribution(name: str, spec: Any, fail) -> Distribution:
    key = f"params.{name}"
    if name not in SEARCHABLE:
        fail(key, f"unknown parameter (known: {', '.join(SEARCHABLE)})")
    if not isinstance(spec, dict):
        fail(key, "must be a table with a type")
    kind = spec.get("type")
    allowed = {
        "int": {"type", "low", "high", "log", "step"},
        "float": {"type", "low", "high", "log", "step"},
        "categorical": {"type", "choices"},
    }
    if kind not in allowed:
        fail(f"{key}.type", f"must be int, float or categorical, got {kind!r}")
    for extra in set(spec) - allowed[kind]:
        fail(f"{key}.{extra}", f"not a setting of a {kind} parameter")
    if kind == "float" and name in INT_PARAMS:
        fail(f"{key}.type", f"{name} is an integer parameter")

    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            fail(f"{key}.choices", "must be a non-empty list")
        for choice in choices:
            if isinstance(choice, bool) or not isinstance(choice, int | float):
                fail(f"{key}.choices", f"expected numbers, got {choice!r}")
            if name in INT_PARAMS and not isinstance(choice, int):
                fail(f"{key}.choices", f"{name} takes integers, got {choice!r}")
        return Distribution(name, kind, choices=tuple(choices))

    number = int if kind == "int" else (int, float)
    for bound in ("low", "high"):
        if bound not in spec:
            fail(f"{key}.{bound}", "missing")
        value = spec[bound]
        if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
            fail(
                f"{key}.{bound}",
                f"expected {'an integer' if kind == 'int' else 'a number'}, got {value!r}",
            )
    low, high, log = spec["low"], spec["high"], spec.get("log", False)
    if not isinstance(log, bool):
        fail(f"{key}.log", f"expected true or false, got {log!r}")
    if low > high:
        fail(key, f"low ({low}) > high ({high})")
    if log and low <= 0:
        fail(f"{key}.low", f"a log scale needs low > 0, got {low}")
    step = spec.get("step")
    if step is not None:
        if isinstance(step, bool) or not isinstance(step, number) or step <= 0:
            fail(f"{key}.step", f"must be a positive number, got {step!r}")
        if log:
            fail(f"{key}.step", "cannot be combined with log")
    return Distribution(name, kind, float(low), float(high), log, step)
