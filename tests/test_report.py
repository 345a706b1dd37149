"""The study report end to end: a real tiny study, the report files, and the page in Chromium."""

import html
import json
import re
import shutil
import statistics
import subprocess
from html.parser import HTMLParser

import optuna
import pytest

from harness.cli import run_main
from harness.report import command as report
from harness.report.final import TITLE
from harness.search.objective import RUN_ID_ATTR
from harness.search.run import SearchOptions, run_search
from tests.helpers import TINY_SEARCH_SPACE

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
        run_id = result.study.trials[int(numbers[0])].user_attrs[RUN_ID_ATTR]
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
        metrics = client.get_run(trial.user_attrs[RUN_ID_ATTR]).data.metrics
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
