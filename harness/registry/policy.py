"""The promotion policy: does a challenger take the champion alias? Pure functions of scores.

A model is compared with the champion only when both were trained and scored on the same data
(the same dataset fingerprint: data, image size and split) and on the same test images. It
then has to beat the champion image by image, beyond the noise of the test split: a paired
bootstrap of its per-image test IoU minus the champion's, whose 90% interval must lie above
`min_improvement`. A higher dataset-level score alone is not enough, because on a small test
split it often is a few lucky images. `force` promotes whatever the comparison says, and the
reason records that it was forced.

Nothing here reads MLflow: the caller gathers the scores (`harness.registry.promotion`).
"""

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from harness.metrics import PairedDifference, paired_bootstrap

# how a reason names the challenger
THIS_MODEL = "this model"


@dataclass(frozen=True)
class Challenger:
    """The run about to become a version: it always has a test score and a fingerprint."""

    score: float
    fingerprint: str
    per_image: Mapping[str, float] | None = None  # test image name -> IoU; None if not logged


@dataclass(frozen=True)
class Champion:
    """The version holding the champion alias, as recorded when it was registered: an older
    one may lack its score or its per-image scores."""

    version: str
    score: float | None
    fingerprint: str | None
    per_image: Mapping[str, float] | None = None

    @property
    def label(self) -> str:
        return f"champion v{self.version}"


@dataclass(frozen=True)
class Decision:
    promoted: bool  # takes the champion alias
    reason: str  # one human sentence
    score: float  # the challenger's test score
    champion_score: float | None  # the champion's before this decision
    difference: PairedDifference | None = None  # per-image test IoU, challenger minus champion


def decide(
    challenger: Challenger,
    champion: Champion | None,
    *,
    score_name: str,
    min_improvement: float = 0.0,
    force: bool = False,
) -> Decision:
    """Whether `challenger` takes the champion alias from `champion` (None: there is none).

    `score_name` is how reasons name the test score (the metric's name).
    """
    if champion is None:
        return Decision(True, "first champion", challenger.score, None)
    name = champion.label

    def verdict(better: bool, reason: str, difference=None) -> Decision:
        if not better and force:
            reason = f"forced: {reason}"
        return Decision(better or force, reason, challenger.score, champion.score, difference)

    if champion.fingerprint != challenger.fingerprint:
        if force:
            return verdict(True, f"forced over {name}, which was trained on other data")
        return verdict(False, f"not compared: {name} was trained on other data")
    if champion.score is None:
        if force:
            return verdict(True, f"forced over {name}, which has no {score_name}")
        return verdict(False, f"not compared: {name} has no {score_name}")
    if champion.per_image is None or challenger.per_image is None:
        which = name if champion.per_image is None else THIS_MODEL
        return verdict(False, f"not compared: {which} has no per-image test scores")
    if champion.per_image.keys() != challenger.per_image.keys():
        return verdict(False, f"not compared: {name} was scored on other test images")
    difference = per_image_difference(challenger.per_image, champion.per_image)
    mine, theirs = format_pair(challenger.score, champion.score)
    interval = (
        f"per-image difference {difference.mean:+.4f}, {difference.level:.0%} interval "
        f"[{difference.low:+.4f}, {difference.high:+.4f}]"
    )
    if difference.low > min_improvement:
        reason = f"better beyond the noise: {mine} vs {theirs} ({name}); {interval} > {min_improvement:g}"
        return verdict(True, reason, difference)
    reason = f"not better beyond the noise: {mine} vs {theirs} ({name}); {interval} not > {min_improvement:g}"
    return verdict(False, reason, difference)


def per_image_difference(
    challenger: Mapping[str, float], champion: Mapping[str, float]
) -> PairedDifference:
    """The paired bootstrap of challenger minus champion over the same images; pairs are
    matched by image name, so the order either was logged in does not matter."""
    names = sorted(challenger)
    return paired_bootstrap(
        np.array([challenger[n] for n in names]), np.array([champion[n] for n in names])
    )


def format_pair(a: float, b: float) -> tuple[str, str]:
    """Both scores with enough digits to tell them apart (4 usually do)."""
    for digits in range(4, 12):
        left, right = f"{a:.{digits}f}", f"{b:.{digits}f}"
        if left != right or digits == 11:
            return left, right
    return repr(a), repr(b)
