"""The MLflow Project in mlproject/: entry points mirror the commands, and `mlflow run` works."""

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from mlflow.projects._project_spec import load_project
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from harness import promote, train
from harness.names import Tag
from harness.search import command as search
from tests.servers import stop_group, worker_env

PROJECT = Path(__file__).resolve().parent.parent / "mlproject"
ENTRY_POINTS = {"search": search, "train": train, "promote": promote}
# boolean parameters and the flag each stands for: (flag, the parameter's value that sets it)
BOOLEANS = {"promote": ("--no-promote", "false"), "progress": ("--no-progress", "false"),
            "force": ("--force", "true"), "compile": ("--compile", "true"),
            "confirm": ("--no-confirm", "false"), "refit": ("--no-refit", "false")}  # fmt: skip
# empty in the project: derived from the store `mlflow run` records into (see MLproject)
DERIVED = {"tracking_uri", "storage"}

TINY_SPACE = """
[study]
max_epochs = 2
image_size = 32
sampler_startup_trials = 2
pruner = "none"

[params.lr]
type = "float"
low = 1e-3
high = 1e-2
log = true

[fixed]
depth = 2
base_channels = 4
batch_size = 16
patience = 2
aug_p = 0.0
"""


def flag_actions(module) -> dict:
    parser = module.build_parser()
    return {
        a.option_strings[-1]: a
        for a in parser._actions
        if a.option_strings and a.option_strings[-1] != "--help"
    }


def flag_of(param: str) -> str:
    return BOOLEANS[param][0] if param in BOOLEANS else "--" + param.replace("_", "-")


@pytest.mark.parametrize("entry_point", ENTRY_POINTS)
def test_entry_point_parameters_are_the_command_s_flags_with_its_defaults(entry_point):
    parameters = load_project(str(PROJECT)).get_entry_point(entry_point).parameters
    actions = flag_actions(ENTRY_POINTS[entry_point])

    assert {flag_of(name) for name in parameters} == set(actions)
    for name, parameter in parameters.items():
        action, default = actions[flag_of(name)], parameter.default
        if name in BOOLEANS:  # a switch, not given by default
            assert action.nargs == 0, name
            assert str(default) != BOOLEANS[name][1], name
        elif name in DERIVED or action.default is None:
            assert default == "", name
        elif isinstance(action.default, int | float):
            assert float(default) == action.default, name
        else:
            assert str(default) == action.default, name


def test_python_env_pins_the_project_s_dependencies():
    env = yaml.safe_load((PROJECT / "python_env.yaml").read_text())
    pyproject = tomllib.loads((PROJECT.parent / "pyproject.toml").read_text())
    assert env["dependencies"] == pyproject["project"]["dependencies"]
    assert sys.version.startswith(env["python"].rsplit(".", 1)[0])


def render(entry_point: str, tmp_path, params: dict, tracking_env: str | None):
    """The folder the entry point's command runs python in and the argv it hands over, as
    MLflow renders and runs it (bash, in the project folder), with `python` swapped for a
    stub that records them."""
    command = load_project(str(PROJECT)).get_entry_point(entry_point).compute_command(params, None)
    stub = tmp_path / "bin" / "python"
    stub.parent.mkdir(exist_ok=True)
    stub.write_text('#!/bin/sh\nprintf "%s\\0" "$PYTHONPATH" "$(pwd)" "$@" > "$ARGV_FILE"\n')
    stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{stub.parent}:{os.environ['PATH']}"}
    env["ARGV_FILE"] = str(tmp_path / "argv")
    env.pop("MLFLOW_TRACKING_URI", None)
    if tracking_env:
        env["MLFLOW_TRACKING_URI"] = tracking_env
    subprocess.run(["bash", "-c", command], cwd=PROJECT, env=env, check=True)
    pythonpath, cwd, *argv = (tmp_path / "argv").read_text().split("\0")[:-1]
    assert pythonpath.split(":")[0] == str(PROJECT.parent)  # the repository root
    assert argv[:2] == ["-m", f"harness.{entry_point}"]
    return Path(cwd), argv[2:]


def test_the_search_command_passes_the_given_values_and_leaves_empty_ones_out(tmp_path):
    team = tmp_path / "team"  # where `mlflow run` was run: its store is team/mlflow.db
    params = {"trials": 3, "study": "my study", "promote": "false", "max_epochs": 2}
    cwd, argv = render("search", tmp_path, params, f"sqlite:///{team}/mlflow.db")
    args = search.build_parser().parse_args(argv)

    assert args.trials == 3 and args.study == "my study" and args.max_epochs == 2
    assert args.promote is False and args.progress_bar is True  # --no-promote, no --no-progress
    assert args.image_size is None and args.timeout is None and args.pruner is None
    # the store `mlflow run` records into, the study beside it, run from there (./mlruns)
    assert args.tracking_uri == f"sqlite:///{team}/mlflow.db"
    assert args.storage == f"sqlite:///{team}/optuna.db"
    assert cwd == team


def test_explicit_stores_win_over_mlflow_run_s_own(tmp_path):
    params = {"tracking_uri": "http://mlflow:5000", "storage": "postgresql://u@db/optuna"}
    cwd, argv = render("search", tmp_path, params, f"sqlite:///{tmp_path}/mlflow.db")
    args = search.build_parser().parse_args(argv)
    assert (args.tracking_uri, args.storage) == ("http://mlflow:5000", "postgresql://u@db/optuna")
    assert cwd == PROJECT  # MLflow's choice, with nothing local to go by

    # a tracking server but no storage: a local study file, as the command's own default
    _, argv = render("search", tmp_path, {"tracking_uri": "http://mlflow:5000"}, None)
    assert search.build_parser().parse_args(argv).storage == "sqlite:///optuna.db"

    # a relative SQLite file is relative to the project folder, made absolute
    cwd, argv = render("search", tmp_path, {"tracking_uri": "sqlite:///mlflow.db"}, None)
    args = search.build_parser().parse_args(argv)
    assert args.tracking_uri == f"sqlite:///{PROJECT}/mlflow.db" and cwd == PROJECT


def test_the_train_and_promote_commands(tmp_path):
    store = f"sqlite:///{tmp_path}/mlflow.db"
    cwd, argv = render("train", tmp_path, {"lr": 0.01, "run_name": "a b"}, store)
    args = train.build_parser().parse_args(argv)
    assert args.lr == 0.01 and args.run_name == "a b" and args.depth == 3
    assert args.tracking_uri == store and cwd == tmp_path

    _, argv = render("promote", tmp_path, {"study": "unet", "force": "true"}, store)
    args = promote.build_parser().parse_args(argv)
    assert args.study == "unet" and args.run_id is None and args.force
    assert args.storage == f"sqlite:///{tmp_path}/optuna.db"


def mlflow_run_search(tmp_path, study: str, tracking_uri: str, project_store: str, *extra):
    """`mlflow run mlproject -e search` (two tiny trials) recording its own run into
    `project_store`; returns its output after checking that it succeeded."""
    space = tmp_path / "tiny.toml"
    space.write_text(TINY_SPACE)
    params = {"trials": 2, "space": space, "data": "synthetic:48", "study": study,
              "storage": f"sqlite:///{tmp_path / 'optuna.db'}", "tracking_uri": tracking_uri,
              "promote": "false", "progress": "false", "confirm": "false",
              "refit": "false"}  # fmt: skip
    command = [sys.executable, "-m", "mlflow", "run", str(PROJECT), "-e", "search",
               "--env-manager", "local", *extra]  # fmt: skip
    for key, value in params.items():
        command += ["-P", f"{key}={value}"]
    env = worker_env()
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # `python` is this venv's
    env["MLFLOW_TRACKING_URI"] = project_store
    process = subprocess.Popen(command, cwd=tmp_path, env=env, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        output, _ = process.communicate(timeout=240)
    finally:
        stop_group(process)
    assert process.returncode == 0, output
    return output


def test_mlflow_run_search_records_the_study_where_it_is_told(tmp_path, tracking_uri):
    """`mlflow run` records its own run in MLFLOW_TRACKING_URI and exports MLFLOW_RUN_ID; the
    search still records into the tracking_uri given, and leaves no run RUNNING anywhere."""
    project_store = f"sqlite:///{tmp_path / 'project.db'}"
    mlflow_run_search(
        tmp_path, "mlproject", tracking_uri, project_store, "--experiment-name", "harness-project"
    )

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("mlproject")
    # run beside the tracking store: artifacts in its ./mlruns, not in the project folder
    store_folder = Path(tracking_uri.removeprefix("sqlite:///")).parent
    assert experiment.artifact_location.startswith((str(store_folder), f"file://{store_folder}"))
    assert not (PROJECT / "mlruns").exists()
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags[Tag.ROLE] for r in runs) == ["study", "trial", "trial"]
    assert all(r.info.status == "FINISHED" for r in runs)

    project = MlflowClient(project_store)
    assert project.get_experiment_by_name("mlproject") is None  # nothing leaked into it
    (run,) = project.search_runs([project.get_experiment_by_name("harness-project").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.tags["mlflow.project.entryPoint"] == "search"
    assert run.data.params["trials"] == "2"


def test_mlflow_run_leaves_one_run_tree(tmp_path):
    """Into one store, as the README runs it (the experiment named after the study): the
    project's own run hangs under the study's parent run, beside the trials."""
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    mlflow_run_search(tmp_path, "tree", "", store, "--experiment-name", "tree")

    client = MlflowClient(store)
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    runs = client.search_runs([experiment.experiment_id])
    roles = sorted(r.data.tags[Tag.ROLE] for r in runs)
    assert roles == ["project", "study", "trial", "trial"]
    (root,) = [r for r in runs if MLFLOW_PARENT_RUN_ID not in r.data.tags]
    assert root.data.tags[Tag.ROLE] == "study"
    assert {r.data.tags[MLFLOW_PARENT_RUN_ID] for r in runs if r is not root} == {root.info.run_id}
    assert all(r.info.status == "FINISHED" for r in runs)
    # the runs the command made name the module that made them and the code's commit
    for run in runs:
        if run.data.tags[Tag.ROLE] == "project":
            assert run.data.tags["mlflow.source.type"] == "PROJECT"
            continue
        assert run.data.tags["mlflow.source.name"].endswith("harness/search/__main__.py")
        assert run.data.tags["mlflow.source.type"] == "LOCAL"
        assert run.data.tags["mlflow.user"]
        commit = subprocess.run(["git", "-C", str(PROJECT), "rev-parse", "HEAD"],
                                capture_output=True, text=True)  # fmt: skip
        assert run.data.tags.get("mlflow.source.git.commit") == (
            commit.stdout.strip() if commit.returncode == 0 else None
        )
