"""The study report: each section built from hand-made records (no search, no MLflow), then
end to end: a real tiny study, the report files, and the page in Chromium."""

import html
import json
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from harness.cli import run_main
from harness.figures import report as figures
from harness.figures import training
from harness.metrics import Scores
from harness.names import Metric, TrialAttr
from harness.report import command as report
from harness.report import sections
from harness.report.document import Image, Table
from harness.report.final import TITLE, final_section
from harness.report.inputs import Confirmation, Contender, Predictions, StudyRecord, TrialRun
from harness.search import SearchOptions, run_search
from harness.trainer import EpochResult, StopReason
from tests.helpers import TINY_SEARCH_SPACE, toy_set, toy_splits

SECTIONS = (
    "Study",
    "UNet depths compared",
    TITLE,
    "Learning curves",
    "Searched parameters",
    "Compute saved by pruning and early stopping",
    "Test predictions of the best model",
)
FIGURES = {
    "optimization_history.png",
    "param_effects.png",
    "param_importances.png",
    "epochs_per_trial.png",
    "test_predictions.png",
    "test_worst.png",
    "test_iou_histogram.png",
}


# --- sections from hand-made records ---------------------------------------------------------

# number: state, depth, lr, value, epochs reported, stop reason
TRIALS = {
    0: (TrialState.COMPLETE, 2, 0.01, 0.70, 4, StopReason.MAX_EPOCHS),
    1: (TrialState.COMPLETE, 3, 0.02, 0.80, 3, StopReason.EARLY_STOPPED),
    2: (TrialState.COMPLETE, 2, 0.03, 0.75, 4, StopReason.MAX_EPOCHS),
    3: (TrialState.PRUNED, 4, 0.05, None, 1, None),
    4: (TrialState.FAIL, 4, 0.05, None, 0, None),
}
DISTRIBUTIONS = {
    "depth": IntDistribution(2, 4),
    "lr": FloatDistribution(1e-3, 1e-1, log=True),
    "aug_p": FloatDistribution(0.0, 0.5),
}


def hand_made_record(trials=TRIALS) -> StudyRecord:
    """An in-memory study of `trials` and a made-up run for each, four epochs at most."""
    study = optuna.create_study(direction="maximize")
    runs = {}
    for number, (state, depth, lr, value, epochs, reason) in trials.items():
        attrs = {TrialAttr.RUN_ID: f"run-{number}"} | (
            {TrialAttr.STOP_REASON: reason} if reason else {}
        )
        study.add_trial(
            create_trial(
                state=state,
                value=value,
                params={"depth": depth, "lr": lr, "aug_p": 0.1},
                distributions=DISTRIBUTIONS,
                intermediate_values={e: 0.5 + 0.01 * e for e in range(1, epochs + 1)},
                user_attrs=attrs,
            )
        )
        params = {"depth": str(depth), "lr": str(lr), "base_channels": "8", "batch_size": "16"}
        metrics = {Metric.TRAIN_TIME_S: 12.34, Metric.BEST_EPOCH: 3.0}
        runs[f"run-{number}"] = TrialRun(f"run-{number}", params, metrics)
    return StudyRecord(
        study=study,
        trials=tuple(study.trials),
        best=study.best_trial,
        maximize=True,
        metric="val_iou",
        parent_run_id="parent",
        runs=runs,
        max_epochs=4,
    )


def contender(record: StudyRecord, number: int, epoch_times: list[float]) -> Contender:
    trial = record.trials[number]
    run = record.run_of(trial)
    scores = Scores(0.9, 0.8, 0.7)
    history = [
        EpochResult(epoch, 1.0, 1.0, scores, scores, seconds)
        for epoch, seconds in enumerate(epoch_times, start=1)
    ]
    depth = record.depth_of(trial)
    return Contender(
        depth, trial, run, history, {split: scores for split in ("train", "val", "test")}
    )


def paragraphs(section) -> str:
    return " ".join(b for b in section.blocks if isinstance(b, str))


def blocks_of(section, kind) -> list:
    return [b for b in section.blocks if isinstance(b, kind)]


def test_the_best_trial_of_each_depth_is_read_from_its_run():
    record = hand_made_record()
    assert {d: t.number for d, t in record.best_per_depth().items()} == {2: 2, 3: 1}


def test_the_overview_counts_the_trials_and_names_the_best():
    section = sections.overview_section(hand_made_record(), toy_splits())
    text = paragraphs(section)
    assert "Data toy:48 at 32 px: 48 train, 16 validation and 16 test images" in text
    assert "Up to 4 epochs per trial." in text
    assert "Trials: 3 complete, 1 pruned, 1 fail." in text
    assert (
        "Best trial: 1, validation IoU 0.8000, with depth = 3, lr = 0.02, aug_p = 0.1. MLflow parent run parent."
        in text
    )
    assert [i.name for i in blocks_of(section, Image)] == ["optimization_history.png"]


def test_the_comparison_marks_the_best_and_names_depths_without_a_complete_trial():
    record = hand_made_record()
    contenders = [contender(record, 2, [3.0, 1.0, 2.0]), contender(record, 1, [])]
    section = sections.comparison_section(record, contenders)
    scores, params = blocks_of(section, Table)
    assert scores.rows == [
        ["UNet depth 2", "2", *["0.9000", "0.8000"] * 3, "2.00", "12.3"],
        ["UNet depth 3 (best)", "1", *["0.9000", "0.8000"] * 3, "", "12.3"],
    ]
    assert params.header[2:5] == ["base_channels", "lr", "batch_size"]
    assert params.rows[0] == [
        "UNet depth 2",
        "2",
        "8",
        "0.03",
        "16",
        "",
        "",
        "4",
        "3",
        "max_epochs",
    ]
    assert params.rows[1][-1] == "early_stopped"
    assert section.blocks[-1] == "Depth 4: no completed trial (1 fail, 1 pruned)."


def test_the_compute_table_adds_up_what_pruning_and_early_stopping_saved():
    seconds = {0: 8.0, 1: 6.0, 2: 8.0, 3: 2.0}  # a failed trial is not counted
    section = sections.pruning_section(hand_made_record(), seconds)
    assert (
        "The 4 finished trials ran 12 of 16 epochs; pruning skipped 3 of them (19% of the "
        "budget), early stopping 1." in paragraphs(section)
    )
    assert "1 failed trial(s) are not counted." in paragraphs(section)
    (table,) = blocks_of(section, Table)
    assert table.rows == [
        ["pruned", "1", "1", "4", "3 (75%)", "2", "6"],
        ["early stopped", "1", "3", "4", "1 (25%)", "6", "2"],
        ["ran all epochs", "2", "8", "8", "0 (0%)", "16", "0"],
        ["all", "4", "12", "16", "4 (25%)", "24", "8"],
    ]


def test_the_parameters_are_drawn_in_the_report_s_order_with_pruned_trials_marked(monkeypatch):
    drawn = {}
    effects = figures.param_effects

    def recording_effects(points, distributions, ylabel):
        drawn.update(points)
        return effects(points, distributions, ylabel)

    monkeypatch.setattr(figures, "param_effects", recording_effects)
    section = sections.parameters_section(hand_made_record())
    assert "every finished trial (4)" in paragraphs(section)
    assert list(drawn) == ["depth", "lr", "aug_p"]  # PARAM_ORDER, not the alphabet
    depth = [(p.value, p.score, p.pruned) for p in drawn["depth"]]
    assert depth == [(2, 0.70, False), (3, 0.80, False), (2, 0.75, False), (4, 0.51, True)]
    assert "param_effects.png" in [i.name for i in blocks_of(section, Image)]
    assert "mostly noise" in paragraphs(section) or "not computable" in paragraphs(section)


def test_a_study_without_searched_parameters_says_so():
    study = optuna.create_study(direction="maximize")
    study.add_trial(create_trial(value=0.5))
    bare = StudyRecord(study, tuple(study.trials), study.best_trial, True, "val_iou", "p", {}, 4)
    assert sections.parameters_section(bare).blocks == ["The study searched no parameter."]


def test_the_predictions_show_the_first_and_the_worst_test_images(monkeypatch):
    test = toy_set(5)
    ious = np.array([0.9, 0.2, 0.6, 0.4, 1.0])
    drawn = []
    grid = training.prediction_grid

    def recording_grid(images, masks, predicted, titles):
        drawn.append(titles)
        return grid(images, masks, predicted, titles)

    monkeypatch.setattr(training, "prediction_grid", recording_grid)
    section = sections.predictions_section(Predictions(7, test, test.masks, ious), 2, 2)
    assert paragraphs(section) == (
        "Trial 7 on the 5 test images: per-image mean IoU 0.6200 on average (median 0.6000, "
        "lowest 0.2000); 2 image(s) below 0.5."
    )
    assert drawn == [
        ["toy-000, IoU 0.90", "toy-001, IoU 0.20"],
        ["toy-001, IoU 0.20", "toy-003, IoU 0.40"],
    ]
    names = [i.name for i in blocks_of(section, Image)]
    assert names == ["test_predictions.png", "test_worst.png", "test_iou_histogram.png"]


def test_the_confirmation_section_gives_each_configuration_by_seed_and_the_refit():
    def row(role, trial, value, test_iou, winner):
        return {
            "trial": trial, "role": role, "value": value, "test_iou": test_iou,
            "epochs_run": "4", "winner": winner,
        }  # fmt: skip

    rows = [
        row("confirm", "3", "0.80", "0.78", "True"),
        row("confirm", "3", "0.82", "0.76", "True"),
        row("confirm", "5", "0.79", "0.75", "False"),
        row("refit", "3", "nan", "0.81", "True"),
    ]
    metrics = {
        Metric.WINNER_TRIAL: 3.0,
        Metric.WINNER_TEST_IOU_MEAN: 0.77,
        Metric.WINNER_TEST_IOU_SD: 0.0141,
        "epochs_search": 20.0,
        "epochs_confirm": 8.0,
        "epochs_refit": 4.0,
    }
    section = final_section(Confirmation(rows, metrics), "val_iou")
    assert section.title == TITLE
    text = paragraphs(section)
    assert (
        "Winner: the configuration of trial 3, test mean IoU 0.7700 ± 0.0141 over its runs." in text
    )
    assert "Refit on train + validation for 4 epoch(s): test mean IoU 0.8100." in text
    assert "search 20, confirm 8, refit 4 (total 32)." in text
    rows[-1]["changes"] = "base_channels=32"  # a space with a [refit] table
    wide = paragraphs(final_section(Confirmation(rows, metrics), "val_iou"))
    assert (
        "Refit on train + validation for 4 epoch(s) with base_channels=32 (the space's [refit]): "
        "test mean IoU 0.8100." in wide
    )
    (table,) = blocks_of(section, Table)
    assert table.header[2] == "val_iou mean ± sd"
    assert table.rows == [
        [
            "3 (winner)",
            "2",
            "0.8100 ± 0.0141",
            "0.7700 ± 0.0141",
            "0.8000 / 0.7800, 0.8200 / 0.7600",
        ],
        ["5", "1", "0.7900", "0.7500", "0.7900 / 0.7500"],
    ]


# --- end to end ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory, tracking_uri):
    """Four trials over depth 2..3 (each depth enqueued once, so that both are there)."""
    folder = tmp_path_factory.mktemp("report-study")
    space = folder / "tiny.toml"
    space.write_text(TINY_SEARCH_SPACE)
    storage = f"sqlite:///{folder / 'optuna.db'}"
    enqueued = optuna.create_study(study_name="report", storage=storage, direction="maximize")
    for depth in (2, 3):  # unprunable startup trials: both depths complete
        enqueued.enqueue_trial({"depth": depth})
    options = SearchOptions(
        space=str(space),
        data="synthetic:48",
        study="report",
        storage=storage,
        tracking_uri=tracking_uri,
        trials=4,
        promote=False,
        confirm_top=2,
        confirm_seeds=1,
        progress_bar=False,
        cache_dir=str(folder / "cache"),  # module scope: the per-test cache dir is not set yet
    )
    result = run_search(options)
    return result, storage, str(folder / "cache")


@pytest.fixture(scope="module")
def written(study, tracking_uri, tmp_path_factory):
    result, storage, cache_dir = study
    out = tmp_path_factory.mktemp("report-out")
    options = report.ReportOptions(
        study="report",
        storage=storage,
        tracking_uri=tracking_uri,
        out=out,
        device="cpu",
        cache_dir=cache_dir,
    )
    path = report.make_report(options)
    return result, out, path


def test_the_report_has_every_section_and_figure(written, client):
    result, out, path = written
    page = path.read_text()
    markdown = (out / "report.md").read_text()
    for title in SECTIONS:
        assert f"<h2>{title}</h2>" in page
        assert f"## {title}" in markdown
    names = {p.name for p in (out / "figures").iterdir()}
    depths = {t.params["depth"] for t in result.study.trials if t.state.name == "COMPLETE"}
    assert FIGURES | {f"learning_curves_depth{d}.png" for d in depths} <= names
    for name in names:
        assert f"](figures/{name})" in markdown
    # self-contained: every image is embedded, nothing is fetched
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert len(sources) == len(names)
    assert all(s.startswith("data:image/png;base64,") for s in sources)
    assert "<script" not in page

    # the comparison table: one row per depth, with all six scores
    for depth in depths:
        row = re.search(rf"<tr><td>UNet depth {depth}[^<]*</td>(.*?)</tr>", page).group(1)
        numbers = re.findall(r"<td>([0-9.]+)</td>", row)
        assert len(numbers) == 1 + 6 + 2  # trial, 3 splits x (accuracy, IoU), times
        run_id = result.study.trials[int(numbers[0])].user_attrs[TrialAttr.RUN_ID]
        epoch_times = [m.value for m in client.get_metric_history(run_id, "epoch_time_s")]
        assert numbers[7] == f"{statistics.median(epoch_times):.2f}"

    # one importance method, named, with the few-trials warning; medians, not means, of epochs
    assert "PED-ANOVA" in page and "mostly noise" in page
    assert "<th>median s / epoch</th>" in page
    assert "pruned trial (x)" in page

    # confirmation and refit: each confirmed configuration by seed, the winner, the refit
    final = page.split(f"<h2>{TITLE}</h2>")[1].split("<h2>")[0]
    winner = result.final.winner.trial.number
    assert f"<td>{winner} (winner)</td><td>2</td>" in final
    assert f"Winner: the configuration of trial {winner}," in final
    assert f"test mean IoU {result.final.refit.test_iou:.4f}. This is the registered model" in final
    assert "Epochs trained by the whole pipeline: search" in final

    logged = {a.path for a in client.list_artifacts(result.parent_run_id, "report")}
    assert {"report/report.html", "report/report.md", "report/figures"} <= logged


def test_best_trials_of_each_depth_get_their_final_scores_logged(written, client):
    result, _, _ = written
    best = {}
    for trial in result.study.trials:
        if trial.state.name == "COMPLETE":
            depth = trial.params["depth"]
            if depth not in best or trial.value > best[depth].value:
                best[depth] = trial
    assert len(best) == 2
    for trial in best.values():
        metrics = client.get_run(trial.user_attrs[TrialAttr.RUN_ID]).data.metrics
        for name in ("final_train_iou", "final_val_iou", "test_iou", "test_accuracy"):
            assert 0 <= metrics[name] <= 1


class _Images(HTMLParser):
    def __init__(self):
        super().__init__()
        self.count = 0

    def handle_starttag(self, tag, attrs):
        self.count += tag == "img"


# A test-only copy of the page gets this probe: after the load event (every image loaded or
# failed) it records each image's natural size on <body>, which --dump-dom then prints. A
# broken image has naturalWidth 0; one deliberately broken image shows that the probe sees it.
# (Waiting on img.decode() promises instead raced with the dump under load.)
PROBE = """<img alt="probe-broken" src="data:image/png;base64,AAAA">
<script>
window.addEventListener("load", () => {
  document.body.dataset.images = JSON.stringify(
    [...document.images].map(img => [img.alt, img.naturalWidth, img.naturalHeight]));
});
</script>"""


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium is not installed")
def test_every_figure_loads_in_headless_chromium(written, tmp_path):
    _, _, path = written
    page = path.read_text()
    probed = tmp_path / "probed.html"
    probed.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = subprocess.run(
        [
            "chromium", "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}",
            "--virtual-time-budget=10000", "--dump-dom", probed.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    found = re.search(r'data-images="([^"]*)"', dom)
    assert found, "the probe did not run: " + dom[-300:]
    sizes = json.loads(html.unescape(found.group(1)))
    parser = _Images()
    parser.feed(page)
    assert len(sizes) == parser.count + 1 > 1
    broken = [alt for alt, width, height in sizes if width == 0 or height == 0]
    assert broken == ["probe-broken"]


def test_user_errors_are_one_line(study, tracking_uri, capsys, tmp_path):
    _, storage, _ = study
    optuna.create_study(study_name="empty", storage=storage, load_if_exists=True)
    cases = [
        ["--study", "no-such-study", "--storage", storage],
        ["--study", "empty", "--storage", storage],
        ["--study", "report", "--storage", f"sqlite:///{tmp_path / 'missing.db'}"],
        ["--study", "report", "--storage", storage, "--data", "synthetic:64"],
    ]
    messages = []
    for args in cases:
        code = run_main(report.main, [*args, "--tracking-uri", tracking_uri, "--no-log"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1, err
        messages.append(err[0])
    assert "no study 'no-such-study'" in messages[0] and "'report'" in messages[0]
    assert "no completed trial" in messages[1]
    assert "no Optuna storage" in messages[2]
    assert "not the data" in messages[3]
    assert not (tmp_path / "missing.db").exists()
