"""harness/names.py is the one place of every MLflow and Optuna name: it agrees with the
trainer's config, the space files and docs/mlflow.md, and no other module spells a name."""

import ast
import dataclasses
import importlib.util
import re
import tomllib
from pathlib import Path

import optuna
from mlflow.entities import RunStatus

from harness import names
from harness.trainer import TrainConfig

ROOT = Path(__file__).resolve().parent.parent
LAYOUT = (ROOT / "docs" / "mlflow.md").read_text().replace("```", "")  # fences: not code spans
NAME_CLASSES = (
    names.Param,
    names.Metric,
    names.Role,
    names.Tag,
    names.TrialAttr,
    names.StudyAttr,
    names.Artifact,
    names.FigureName,
    names.Column,
    names.VersionTag,
)


def values(cls) -> dict[str, str]:
    return {k: v for k, v in vars(cls).items() if k.isupper() and isinstance(v, str)}


def test_the_hyperparameters_are_spelled_as_the_trainer_config_s_fields():
    params = values(names.Param)
    for field in dataclasses.fields(TrainConfig):
        assert params.get(field.name.upper()) == field.name, field.name


def test_every_key_of_every_space_file_is_a_trainer_config_field():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    spaces = sorted((ROOT / "search_spaces").glob("*.toml"))
    assert spaces
    for path in spaces:
        document = tomllib.loads(path.read_text())
        keys = set(document.get("params", {})) | set(document.get("fixed", {}))
        for configuration in document.get("enqueue", []):
            keys |= set(configuration)
        assert keys <= fields, (path.name, keys - fields)


def test_the_library_state_names_are_the_libraries_own():
    trial_states = optuna.trial.TrialState
    assert names.COMPLETE == trial_states.COMPLETE.name
    assert names.PRUNED == trial_states.PRUNED.name
    assert names.FAIL == trial_states.FAIL.name
    for status in ("FINISHED", "FAILED", "KILLED", "RUNNING"):
        assert getattr(names, status) == RunStatus.to_string(getattr(RunStatus, status))


def test_docs_mlflow_md_lists_every_name():
    quoted = set(re.findall(r"`([^`\n]+)`", LAYOUT))
    words = {word for text in quoted for word in re.split(r"[\s,/]+", text)}
    missing = [
        f"{cls.__name__}.{key} = {value!r}"
        for cls in NAME_CLASSES
        for key, value in values(cls).items()
        if value not in quoted and value not in words and not any(value in q for q in quoted)
    ]
    assert not missing, f"not in docs/mlflow.md: {missing}"


def test_every_harness_tag_the_docs_name_is_defined():
    defined = {v for cls in NAME_CLASSES for v in values(cls).values()}
    docs = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for path in docs:
        for name in set(re.findall(r"`(harness\.[a-z_]+)`", path.read_text())):
            if importlib.util.find_spec(name) is None:  # a module, e.g. `harness.search`
                assert name in defined, f"{path.name}: {name} is no name of harness/names.py"


def test_no_other_module_spells_a_harness_tag():
    """A string literal "harness.<word>" outside names.py is a tag spelled twice (modules'
    own dotted paths, as in usage lines, aside)."""
    spelled = []
    for path in sorted((ROOT / "harness").rglob("*.py")):
        if path.name == "names.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if (
                    re.fullmatch(r"harness\.[a-z_]+", text)
                    and importlib.util.find_spec(text) is None
                ):
                    spelled.append(f"{path.relative_to(ROOT)}: {text!r}")
    assert not spelled, spelled
