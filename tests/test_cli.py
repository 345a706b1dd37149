"""Each command's options are declared once, as a dataclass: its parser's defaults are the
dataclass's, and its switches set the fields they name."""

from pathlib import Path

import pytest

from harness import predict, promote, train
from harness.cli import options_from
from harness.predict import PredictOptions
from harness.promote import PromoteOptions
from harness.report import command as report
from harness.report.command import ReportOptions
from harness.search import SearchOptions
from harness.search import command as search
from harness.train import TrainOptions
from harness.transfer import TransferOptions
from harness.transfer import command as transfer

COMMANDS = [
    (search, SearchOptions, [], {}),
    (train, TrainOptions, [], {}),
    (report, ReportOptions, ["--study", "s"], {"study": "s"}),
    (promote, PromoteOptions, ["--run-id", "r"], {"run_id": "r"}),
    (
        predict,
        PredictOptions,
        ["a.png", "--out", "o"],
        {"images": [Path("a.png")], "out": Path("o")},
    ),
    (transfer, TransferOptions, [], {}),
]


@pytest.mark.parametrize(
    "command, options, argv, given", COMMANDS, ids=lambda c: getattr(c, "__name__", "")
)
def test_a_command_s_defaults_are_its_options_dataclass_s(command, options, argv, given):
    assert options_from(options, command.build_parser().parse_args(argv)) == options(**given)


def test_switches_and_renamed_flags_set_the_fields_they_name():
    args = search.build_parser().parse_args(
        [
            "--no-promote",
            "--no-confirm",
            "--no-refit",
            "--no-progress",
            "--compile",
            "--heartbeat",
            "5",
            "--confirm-top",
            "4",
        ]  # fmt: skip
    )
    options = options_from(SearchOptions, args)
    assert (options.promote, options.confirm, options.refit, options.progress_bar) == (False,) * 4
    assert options.compile_model and options.heartbeat_s == 5 and options.confirm_top == 4
    assert options.final.confirm_top == 0  # --no-confirm wins over --confirm-top


def test_promote_takes_exactly_one_source(capsys):
    parser = promote.build_parser()
    for argv in ([], ["--study", "s", "--run-id", "r"]):
        with pytest.raises(SystemExit) as stopped:
            parser.parse_args(argv)
        assert stopped.value.code == 2
    assert "one of the arguments --study --run-id is required" in capsys.readouterr().err
