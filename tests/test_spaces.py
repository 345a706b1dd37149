import optuna
import pytest

from harness.cli import run_main
from harness.search.command import main
from harness.search.spaces import SpaceError, load_space
from harness.search.studies import make_pruner
from harness.trainer import TrainConfig


def test_the_default_space_is_the_reports():
    space = load_space()
    assert space.name == "unet"
    assert set(space.params) == {"depth", "lr", "batch_size", "patience", "aug_p"}
    assert (space.params["depth"].low, space.params["depth"].high) == (2, 5)
    assert space.params["lr"].log and (space.params["lr"].low, space.params["lr"].high) == (
        1e-4,
        1e-2,
    )
    assert space.params["batch_size"].choices == (8, 16, 32)
    assert space.fixed == {"base_channels": 16}
    assert space.study.metric == "val_iou" and space.study.direction == "maximize"
    # the original report's hand recipe (but its base channels) is tried first
    assert space.enqueue == (
        {"depth": 3, "lr": 1e-3, "batch_size": 16, "patience": 5, "aug_p": 0.2},
    )


def test_the_default_epoch_budget_fits_the_training_set():
    settings = load_space().study
    # the generated default's 700 training images keep their 8 epochs; small sets get more passes
    assert settings.epochs(700) == 8
    assert settings.epochs(230) == 24
    assert settings.epochs(100) == 40  # at most max_epochs
    assert settings.epochs(5000) == 8  # at least min_epochs
    # ASHA's first rung follows the budget: epoch 1 of 8, epoch 3 of 24
    assert make_pruner("asha", settings, 8)._min_resource == 1
    assert make_pruner("asha", settings, 24)._min_resource == 3


def test_rung_images_keep_ashas_rungs_put_when_the_budget_grows(tmp_path):
    path = tmp_path / "rungs.toml"
    path.write_text(
        "[study]\nbudget_images = 5600\nmin_epochs = 24\nmax_epochs = 40\nrung_images = 700\n"
    )
    settings = load_space(str(path)).study
    assert settings.epochs(700) == 24
    assert make_pruner("asha", settings, 24, 700)._min_resource == 1  # not 3: 1/8 of 24
    assert make_pruner("asha", settings, 24, 230)._min_resource == 3
    assert make_pruner("asha", settings, 24, 5000)._min_resource == 1  # at least one epoch
    assert make_pruner("asha", settings, 2, 100)._min_resource == 2  # at most the budget
    path.write_text("[study]\nrung_images = -1\n")
    with pytest.raises(SpaceError, match="rung_images: must not be negative"):
        load_space(str(path))


def test_the_reduction_factor_sets_how_many_trials_a_rung_keeps(tmp_path):
    def second_best_goes_on(reduction_factor: int) -> bool:
        path = tmp_path / f"rf{reduction_factor}.toml"
        path.write_text(f"[study]\nmax_epochs = 9\nreduction_factor = {reduction_factor}\n")
        pruner = make_pruner("asha", load_space(str(path)).study, 9)
        study = optuna.create_study(direction="maximize", pruner=pruner)
        for value in (0.9, 0.1, 0.2, 0.3, 0.4):  # five trials reached the first rung before
            trial = study.ask()
            trial.report(value, 1)
            trial.should_prune()  # the pruner records the trial at its rung
            study.tell(trial, value)
        trial = study.ask()
        trial.report(0.5, 1)  # second of the six at the rung
        return not trial.should_prune()

    assert second_best_goes_on(3)  # the top third of six: two go on
    assert not second_best_goes_on(4)  # the top quarter: only the best
    path = tmp_path / "bad.toml"
    path.write_text("[study]\nreduction_factor = 1\n")
    with pytest.raises(SpaceError, match="reduction_factor: must be at least 2"):
        load_space(str(path))


def test_without_an_images_budget_max_epochs_is_the_budget(tmp_path):
    path = tmp_path / "fixed.toml"
    path.write_text("[study]\nmax_epochs = 5\n")
    assert load_space(str(path)).study.epochs(10) == 5


def test_a_refit_table_holds_values_for_the_refit_only(tmp_path):
    path = tmp_path / "wide.toml"
    path.write_text(f"{LR}[fixed]\nbase_channels = 16\n[refit]\nbase_channels = 32\n")
    space = load_space(str(path))
    assert space.fixed == {"base_channels": 16} and space.refit == {"base_channels": 32}
    assert space.config({"lr": 0.002}, seed=0, max_epochs=3).base_channels == 16
    assert load_space().refit == {}  # the default space refits the winner as it trained


def test_suggest_takes_searched_values_from_the_trial_and_fixed_ones_from_the_file(tmp_path):
    path = tmp_path / "fix.toml"
    path.write_text(
        '[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\n[fixed]\ndepth = 4\naug_p = 0.0\n'
    )
    space = load_space(str(path))
    trial = optuna.create_study().ask()
    config = space.suggest(trial, seed=3, max_epochs=5)
    assert isinstance(config, TrainConfig)
    assert config.depth == 4 and config.aug_p == 0.0 and config.seed == 3 and config.max_epochs == 5
    assert trial.params == {"lr": config.lr} and 0.001 <= config.lr <= 0.01


LR = '[params.lr]\ntype = "float"\nlow = 0.001\nhigh = 0.01\n'

MALFORMED = {
    "syntax": ("[params.lr\ntype = 'float'", "invalid TOML"),
    "unknown_param": (
        '[params.dropout]\ntype = "float"\nlow = 0.1\nhigh = 0.2\n',
        "params.dropout",
    ),
    "unknown_type": ('[params.lr]\ntype = "normal"\nlow = 0.1\nhigh = 0.2\n', "params.lr.type"),
    "low_above_high": (
        '[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n',
        "params.lr: low (0.1) > high (0.01)",
    ),
    "empty_choices": (
        '[params.batch_size]\ntype = "categorical"\nchoices = []\n',
        "params.batch_size.choices",
    ),
    "log_nonpositive": (
        '[params.lr]\ntype = "float"\nlow = 0.0\nhigh = 0.1\nlog = true\n',
        "params.lr.low",
    ),
    "unknown_fixed": ("[fixed]\nwidth = 3\n", "fixed.width"),
    "unknown_setting": ("[study]\npatience = 3\n", "study.patience"),
    "bad_pruner": ('[study]\npruner = "sometimes"\n', "study.pruner"),
    "min_above_max_epochs": (
        "[study]\nmin_epochs = 9\nmax_epochs = 8\n",
        "study.min_epochs: more than max_epochs (8)",
    ),
    "negative_budget": ("[study]\nbudget_images = -1\n", "study.budget_images"),
    "float_depth": ('[params.depth]\ntype = "float"\nlow = 2.0\nhigh = 4.0\n', "params.depth.type"),
    "invalid_config": ('[params.depth]\ntype = "int"\nlow = 2\nhigh = 9\n', "depth"),
    "enqueue_not_tables": (f"enqueue = 3\n{LR}", "enqueue: must be [[enqueue]] tables"),
    "enqueue_empty": (f"{LR}[[enqueue]]\n", "enqueue[0]: is empty"),
    "enqueue_unsearched": (
        f"{LR}[[enqueue]]\nlr = 0.002\n[[enqueue]]\nwidth = 3\n",
        "enqueue[1].width: not a searched parameter (searched: lr)",
    ),
    "enqueue_fixed": (
        f"{LR}[fixed]\ndepth = 3\n[[enqueue]]\ndepth = 3\n",
        "enqueue[0].depth: is fixed in this space, not searched",
    ),
    "enqueue_out_of_range": (
        f"{LR}[[enqueue]]\nlr = 0.5\n",
        "enqueue[0].lr: expected a number from 0.001 to 0.01, got 0.5",
    ),
    "enqueue_not_a_choice": (
        '[params.batch_size]\ntype = "categorical"\nchoices = [8, 16]\n[[enqueue]]\nbatch_size = 12\n',
        "enqueue[0].batch_size: expected one of [8, 16], got 12",
    ),
    "refit_searched": (f"{LR}[refit]\nlr = 0.002\n", "refit.lr: searched: the refit trains"),
    "refit_unknown": ("[refit]\nwidth = 32\n", "refit.width: unknown parameter"),
    "refit_not_a_number": ('[refit]\nbase_channels = "wide"\n', "refit.base_channels: expected"),
    "refit_float_for_int": ("[refit]\nbase_channels = 32.0\n", "refit.base_channels: expected"),
    "refit_invalid_config": ("[refit]\ndepth = 9\n", "refit: invalid depth: 9"),
    "refit_not_a_table": ("refit = 32\n", "refit: must be a table"),
    "fixed_not_a_table": ("fixed = 32\n", "fixed: must be a table"),
    "enqueue_float_for_int": (
        '[params.depth]\ntype = "int"\nlow = 2\nhigh = 4\n[[enqueue]]\ndepth = 3.0\n',
        "enqueue[0].depth: expected an integer from 2 to 4, got 3.0",
    ),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_space_names_file_and_key(tmp_path, case):
    text, expected = MALFORMED[case]
    path = tmp_path / f"{case}.toml"
    path.write_text(text)
    with pytest.raises(SpaceError) as error:
        load_space(str(path))
    message = str(error.value)
    assert str(path) in message and expected in message
    assert "\n" not in message


def test_malformed_space_stops_the_search_before_any_study_or_run(tmp_path, capsys):
    path = tmp_path / "bad.toml"
    path.write_text('[params.lr]\ntype = "float"\nlow = 0.1\nhigh = 0.01\n')
    code = run_main(main, ["--space", str(path), "--trials", "1", "--no-progress"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "bad.toml" in err[0]
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_missing_space_file(capsys):
    assert run_main(main, ["--space", "no-such-space", "--no-progress"]) == 2
    assert "no-such-space.toml" in capsys.readouterr().err
