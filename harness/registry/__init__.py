"""The model registry: register a run's model, compare it with the champion, move the alias.

A finished training run (a search's refit model or best trial, or a `harness.train` run)
becomes a new version of the registered model with the alias `challenger`; it takes
`champion` only when it beats the champion on the same data beyond the noise, or is forced.

* `policy`: the promotion decision, pure functions of the scores;
* `source`: the training run a version is made from, checked up front;
* `export`: the run's checkpoint as an MLflow logged model ("pt2", served through pyfunc);
* `store`: Model Registry reads and writes (versions, tags, aliases);
* `promotion`: `promote_run`, which puts these together;
* `uris`: the one parser and resolver of the model URIs the commands take.

The registered model's name, its aliases and the version tags are in `harness.names`.
"""
