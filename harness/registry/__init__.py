"""The model registry: register a run's model, compare it with the champion, move the alias.

A finished training run (a search's refit model or best trial, or a `harness.train` run)
becomes a new version of the registered model with the alias `challenger`; it takes
`champion` only when it beats the champion on the same data beyond the noise, or is forced.

* `names`: the registered model, aliases and version tags;
* `policy`: the promotion decision, pure functions of the scores;
* `source`: the training run a version is made from, checked up front;
* `export`: the run's checkpoint as an MLflow logged model ("pt2", served through pyfunc);
* `store`: Model Registry reads and writes (versions, tags, aliases);
* `promotion`: `promote_run`, which puts these together;
* `uris`: the one parser and resolver of the model URIs the commands take.
"""

import importlib

# What callers import from the package, loaded on first use: importing `harness.registry.policy`
# alone must not pull in MLflow through this file.
_EXPORTS = {
    "CHALLENGER": "names",
    "CHAMPION": "names",
    "DEFAULT_REGISTERED_MODEL": "names",
    "LOGGED_MODEL_NAME": "names",
    "SCORE_METRIC": "names",
    "VersionTag": "names",
    "Promotion": "promotion",
    "format_promotion": "promotion",
    "promote_run": "promotion",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
