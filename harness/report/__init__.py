"""A study's report: `command` reads MLflow and Optuna, `sections` builds the sections,
`final` the confirmation section, `document` writes HTML and Markdown (and imports nothing
else of the harness). `python -m harness.report` is `command`."""
