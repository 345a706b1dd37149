"""`python -m harness.transfer`: the command line over `run_transfer`."""

import argparse

from harness.cli import options_from, parser_for
from harness.data import SPECIES
from harness.transfer.options import TransferOptions
from harness.transfer.run import run_transfer


def build_parser() -> argparse.ArgumentParser:
    return parser_for(
        "python -m harness.transfer",
        "Cat-versus-dog classifier on the frozen encoder of a segmentation model: pooled "
        "encoder features, class-balanced logistic regression, tracked in MLflow.",
        TransferOptions,
    )


def main(argv: list[str] | None = None) -> int:
    args = options_from(TransferOptions, build_parser().parse_args(argv))
    result = run_transfer(args)
    origin = result.source
    what = f"{origin.model_name} version {origin.model_version}, " if origin.model_name else ""
    print(f"encoder of {what}run {origin.run_id}; {args.features} features, C = {result.c:g}")
    print(f"{'split':<6} {'accuracy':>9} {'balanced':>9} " + " ".join(f"{s:>6}" for s in SPECIES))
    for split, s in result.scores.items():
        per_class = " ".join(f"{s.per_class.get(name, float('nan')):>6.3f}" for name in SPECIES)
        print(f"{split:<6} {s.accuracy:>9.3f} {s.balanced_accuracy:>9.3f} {per_class}")
    print(f"MLflow run {result.run_id} in experiment {args.experiment!r}")
    return 0
