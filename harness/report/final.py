"""The report's section on confirmation and refit, from the parent run's record of them."""

import math

from harness.names import SEARCH_STAGE, Column, Metric, Role, stage_epochs_metric
from harness.report.document import Section, Table
from harness.report.inputs import Confirmation
from harness.search.confirm import figures

TITLE = "Confirmation and refit: the winner over seeds"


def final_section(confirmation: Confirmation, metric: str) -> Section:
    """Each confirmed configuration by seed (validation and test), the winner's test mean IoU
    as mean ± sd over its runs, the refit model's, and the pipeline's compute."""
    rows, metrics = confirmation.rows, confirmation.metrics
    runs = [r for r in rows if r[Column.ROLE] != Role.REFIT]
    trials = list(dict.fromkeys(r[Column.TRIAL] for r in runs))
    table = []
    for trial in trials:
        own = [r for r in runs if r[Column.TRIAL] == trial]
        values = [float(r[Column.VALUE]) for r in own]
        tests = [float(r[Column.TEST_IOU]) for r in own]
        by_seed = ", ".join(
            f"{float(r[Column.VALUE]):.4f} / {float(r[Column.TEST_IOU]):.4f}" for r in own
        )
        winner = own[0][Column.WINNER] == "True"
        table.append(
            [
                f"{trial}{' (winner)' if winner else ''}",
                str(len(own)),
                figures(values),
                figures(tests),
                by_seed,
            ]  # fmt: skip
        )
    refit = [r for r in rows if r[Column.ROLE] == Role.REFIT]
    text = [
        f"The configurations of the {len(trials)} best complete trials were trained again with "
        "more seeds; the winner is the one with the best mean validation metric over its runs. "
        "A single trial's score is one draw: the spread over seeds is the noise of one run."
    ]
    winner_sd = metrics.get(Metric.WINNER_TEST_IOU_SD, math.nan)
    spread = f" ± {winner_sd:.4f}" if math.isfinite(winner_sd) else ""
    text.append(
        f"Winner: the configuration of trial {int(metrics[Metric.WINNER_TRIAL])}, test mean IoU "
        f"{metrics[Metric.WINNER_TEST_IOU_MEAN]:.4f}{spread} over its runs."
    )
    if refit:
        changes = refit[0].get(Column.CHANGES)  # absent in records from before [refit]
        changed = f" with {changes} (the space's [refit])" if changes else ""
        text.append(
            f"Refit on train + validation for {refit[0][Column.EPOCHS_RUN]} epoch(s){changed}: "
            f"test mean IoU {float(refit[0][Column.TEST_IOU]):.4f}. This is the registered model."
        )
    stages = [
        (stage, metrics.get(stage_epochs_metric(stage)))
        for stage in (SEARCH_STAGE, Role.CONFIRM, Role.REFIT)
    ]
    compute = ", ".join(f"{stage} {int(n)}" for stage, n in stages if n is not None)
    total = sum(int(n) for _, n in stages if n is not None)
    text.append(f"Epochs trained by the whole pipeline: {compute} (total {total}).")
    header = [
        "trial",
        "runs",
        f"{metric} mean ± sd",
        "test mean IoU ± sd",
        f"by seed ({metric} / test)",
    ]
    return Section(TITLE, [" ".join(text), Table(header, table)])
