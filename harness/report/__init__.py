"""A study's report. `command` (`python -m harness.report`) tells the story: `reading` reads
Optuna and MLflow into the plain records of `inputs` (and writes scores and files back),
`sections` and `final` build the sections from those records alone, and `document` writes HTML
and Markdown (and imports nothing else of the harness)."""
