"""What every command-line entry point shares: options declared once, flag types and the
error contract.

A command's options are a frozen dataclass whose fields are made by `option` (or one of the
shared ones below, such as `tracking_uri_option`): `parser_for` builds the command's parser
from it and `options_from` fills it from the parsed arguments.

A `HarnessError` (the user's to fix) ends with one line on stderr and exit status 2;
Ctrl-C ends with status 130 and SIGTERM with 143 (128 + 15, as a shell reports a process
killed by it), each after the clean-up described in harness/stopping.py. Anything else is a
bug and keeps its traceback.
"""

import argparse
import dataclasses
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from harness.errors import HarnessError
from harness.names import DEFAULT_REGISTERED_MODEL, DEFAULT_STORAGE, DEFAULT_TRACKING_URI
from harness.stopping import INTERRUPTED, TERMINATED, Terminated, stops_handled

EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


def quiet_libraries() -> None:
    # MLflow's store set-up logs its schema migrations on stderr; users asked for none of that.
    for name in ("alembic", "mlflow"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Optuna warns with a traceback for every failed trial; the objective prints one line.
    logging.getLogger("optuna").setLevel(logging.ERROR)
    # heartbeats and the matplotlib plots are flagged experimental; we pin the version we test
    warnings.filterwarnings("ignore", message=r".*is experimental.*")
    warnings.filterwarnings("ignore", message=r".*experimental feature.*")
    # the final stage asks for its jobs' trials itself and beats their heartbeats (confirm.py)
    warnings.filterwarnings("ignore", message=r"Heartbeat of storage is supposed to be used")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # with an http tracking server MLflow prints two "View run" links per run ended
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return value


DATA_HELP = (
    "synthetic[:N] (generated pets), oxford-pet:PATH (Oxford-IIIT Pet layout) "
    "or folder:PATH (images/ and masks/ paired by file stem)"
)
DEVICE_HELP = "auto, cpu, cuda or cuda:N"
TRACKING_URI_HELP = "MLflow tracking URI: a database URL or an http(s) server"
CACHE_DIR_HELP = "decoded-data cache (default $HARNESS_CACHE_DIR or ~/.cache/harness)"
MIN_IMPROVEMENT_HELP = (
    "the per-image test IoU difference over the champion whose 90%% bootstrap interval's lower "
    "end a challenger must exceed to take the champion alias"
)
PRECISION_HELP = "autocast dtype; auto = bf16 where the CPU or GPU does it natively, else fp32"
COMPILE_HELP = (
    "run training through torch.compile: a fixed start-up cost per training that pays off "
    "only for long trainings; see docs/performance.md"
)


# --- options: a dataclass field that is also its command's flag, declared once ----------------

FLAG = "flag"  # a field's metadata key: its flag strings, argument group and argparse keywords
Options = TypeVar("Options")


def option(*flags: str, default: Any = None, group: str | None = None, **argparse_kwargs) -> Any:
    """A field of a command's options dataclass and the flag that sets it.

    The flag's destination is the field's name and its default the field's, so the dataclass is
    the one place a command's options are declared: `parser_for` puts them on a parser and
    `options_from` reads them back (a switch such as `--no-promote` sets `promote: bool = True`
    with `action="store_false"`). A flag without a dash is a positional argument.
    """
    return dataclasses.field(default=default, metadata={FLAG: (flags, group, argparse_kwargs)})


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except a switch's (it would only say True or False) and a None
    (the help says what leaving the flag out does)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


def parser_for(
    prog: str,
    description: str,
    options: type,
    groups: dict[str, str] | None = None,
    one_of: str | None = None,
) -> argparse.ArgumentParser:
    """A command's parser with its options dataclass's flags, in field order and in their
    argument groups (`groups`: a group's description by its title); exactly one flag of the
    group `one_of` must be given."""
    parser = argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=HelpFormatter
    )
    descriptions = groups or {}
    containers: dict[str | None, Any] = {None: parser}
    for field in dataclasses.fields(options):
        if FLAG not in field.metadata:
            continue
        flags, group, kwargs = field.metadata[FLAG]
        if group not in containers and group == one_of:
            containers[group] = parser.add_mutually_exclusive_group(required=True)
        elif group not in containers:
            containers[group] = parser.add_argument_group(group, descriptions.get(group))
        if flags[0].startswith("-"):
            kwargs = {"dest": field.name, **kwargs}
        else:  # positional: argparse names it by its one string
            flags = (field.name,)
        if kwargs.get("required"):
            containers[group].add_argument(*flags, **kwargs)
        else:
            containers[group].add_argument(*flags, default=field.default, **kwargs)
    return parser


def options_from(options: type[Options], args: argparse.Namespace, **values) -> Options:
    """The options dataclass filled from parsed arguments; `values` sets fields that are not
    flags (or overrides them)."""
    for field in dataclasses.fields(options):
        if FLAG in field.metadata:
            values.setdefault(field.name, getattr(args, field.name))
    return options(**values)


# The options several commands share, each spelled here once.


def tracking_uri_option(**kwargs) -> Any:
    return option("--tracking-uri", default=DEFAULT_TRACKING_URI, help=TRACKING_URI_HELP, **kwargs)


def storage_option(help: str = "Optuna storage URL", **kwargs) -> Any:
    return option("--storage", default=DEFAULT_STORAGE, help=help, **kwargs)


def data_option(default: str | None, help: str | None = None, **kwargs) -> Any:
    return option("--data", default=default, help=help or DATA_HELP, **kwargs)


def image_size_option(default: int | None, help: str, **kwargs) -> Any:
    return option("--image-size", type=positive_int, default=default, help=help, **kwargs)


def cache_dir_option(**kwargs) -> Any:
    return option("--cache-dir", help=CACHE_DIR_HELP, **kwargs)


def device_option(help: str = DEVICE_HELP, **kwargs) -> Any:
    return option("--device", default="auto", help=help, **kwargs)


def precision_option(**kwargs) -> Any:
    from harness.trainer import PRECISIONS  # torch: imported by the commands that train

    return option("--precision", default="auto", choices=PRECISIONS, help=PRECISION_HELP, **kwargs)


def compile_option(**kwargs) -> Any:
    return option("--compile", default=False, action="store_true", help=COMPILE_HELP, **kwargs)


def force_option(**kwargs) -> Any:
    return option(
        "--force",
        default=False,
        action="store_true",
        help="make it the champion whatever the comparison says",
        **kwargs,
    )


def registered_model_option(help: str, **kwargs) -> Any:
    return option("--registered-model", default=DEFAULT_REGISTERED_MODEL, help=help, **kwargs)


def min_improvement_option(**kwargs) -> Any:
    return option("--min-improvement", type=float, default=0.0, help=MIN_IMPROVEMENT_HELP, **kwargs)


def run_main(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    quiet_libraries()
    with stops_handled():
        try:
            return main(argv) or 0
        except HarnessError as error:
            print(f"error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except Terminated:
            print(TERMINATED, file=sys.stderr)
            return EXIT_TERMINATED
        except KeyboardInterrupt:
            print(INTERRUPTED, file=sys.stderr)
            return EXIT_INTERRUPTED
