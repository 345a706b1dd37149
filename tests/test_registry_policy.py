"""The promotion policy as pure functions: chosen scores in, a decision out. No training, no
MLflow; `test_registry.py` runs the same decisions end to end."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.registry.policy import Challenger, Champion, Decision, decide, format_pair

IMAGES = [f"img{i:02d}" for i in range(20)]
FINGERPRINT = "0123456789abcdef"
OTHER_FINGERPRINT = "0ther0000000data"
BASE = np.full(len(IMAGES), 0.5)
# higher on average, but image by image as often worse as better: noise
NOISY = BASE + np.tile([0.08, -0.07], len(IMAGES) // 2)
# better on every image
CLEAR = BASE + np.linspace(0.02, 0.06, len(IMAGES))


def scores(values) -> dict[str, float]:
    return dict(zip(IMAGES, (float(v) for v in values)))


def champion(per_image=BASE, score=0.5, fingerprint=FINGERPRINT, version="1") -> Champion:
    return Champion(version, score, fingerprint, None if per_image is None else scores(per_image))


def challenger(per_image, score=0.51, fingerprint=FINGERPRINT) -> Challenger:
    return Challenger(score, fingerprint, None if per_image is None else scores(per_image))


def run(mine: Challenger, theirs: Champion | None, **options) -> Decision:
    return decide(mine, theirs, score_name="test_iou", **options)


def test_the_first_model_is_the_first_champion():
    assert run(challenger(NOISY), None) == Decision(True, "first champion", 0.51, None)


def test_a_difference_inside_the_noise_leaves_the_champion():
    decision = run(challenger(NOISY), champion())

    assert not decision.promoted
    assert decision.reason.startswith(
        "not better beyond the noise: 0.5100 vs 0.5000 (champion v1); per-image difference "
        "+0.0050, 90% interval ["
    )
    assert decision.reason.endswith("] not > 0")
    assert (decision.score, decision.champion_score) == (0.51, 0.5)
    assert decision.difference.low < 0 < decision.difference.high
    assert decision.difference.mean == pytest.approx(0.005)


def test_a_clear_improvement_takes_the_champion_alias():
    decision = run(challenger(CLEAR, score=0.54), champion())

    assert decision.promoted
    assert decision.reason.startswith("better beyond the noise: 0.5400 vs 0.5000 (champion v1)")
    assert decision.reason.endswith("> 0")
    assert decision.difference.low > 0
    assert decision.difference.mean == pytest.approx(0.04)


def test_min_improvement_raises_the_bar():
    # +0.08 on average, every image at least +0.06 better
    mine = challenger(CLEAR + 0.04, score=0.58)

    assert run(mine, champion(), min_improvement=0.05).promoted
    high = run(mine, champion(), min_improvement=0.1)
    assert not high.promoted
    assert high.difference.low > 0.05 and high.reason.endswith("not > 0.1")


def test_force_promotes_whatever_the_comparison_says_and_the_reason_says_so():
    forced = run(challenger(NOISY), champion(), force=True)
    assert forced.promoted
    assert forced.reason.startswith("forced: not better beyond the noise")
    assert forced.difference is not None  # the comparison is still recorded

    # a challenger that wins anyway is not "forced"
    assert not run(challenger(CLEAR), champion(), force=True).reason.startswith("forced")


def test_a_champion_trained_on_other_data_is_never_compared():
    # far better image by image: it does not matter, the scores are not comparable
    other = champion(fingerprint=OTHER_FINGERPRINT)
    decision = run(challenger(CLEAR, score=0.9), other)

    assert not decision.promoted and decision.difference is None
    assert decision.reason == "not compared: champion v1 was trained on other data"
    forced = run(challenger(CLEAR, score=0.9), other, force=True)
    assert forced.promoted and forced.difference is None
    assert forced.reason == "forced over champion v1, which was trained on other data"
    # nor is one whose fingerprint is not on record
    assert not run(challenger(CLEAR), champion(fingerprint=None)).promoted


def test_a_champion_without_per_image_scores_is_not_compared_unless_forced():
    decision = run(challenger(CLEAR, score=0.9), champion(per_image=None, version="3"))

    assert not decision.promoted and decision.difference is None
    assert decision.reason == "not compared: champion v3 has no per-image test scores"
    assert decision.champion_score == 0.5
    forced = run(challenger(CLEAR, score=0.9), champion(per_image=None), force=True)
    assert forced.promoted
    assert forced.reason == "forced: not compared: champion v1 has no per-image test scores"


def test_a_challenger_without_per_image_scores_is_not_compared():
    decision = run(challenger(None), champion())
    assert not decision.promoted
    assert decision.reason == "not compared: this model has no per-image test scores"


def test_a_champion_without_a_recorded_score_is_not_compared_unless_forced():
    decision = run(challenger(CLEAR), champion(score=None))
    assert not decision.promoted and decision.champion_score is None
    assert decision.reason == "not compared: champion v1 has no test_iou"
    forced = run(challenger(CLEAR), champion(score=None), force=True)
    assert forced.promoted and forced.reason == "forced over champion v1, which has no test_iou"


def test_scores_on_other_test_images_are_not_compared():
    theirs = Champion("1", 0.5, FINGERPRINT, {f"other{i}": 0.5 for i in range(len(IMAGES))})
    decision = run(challenger(CLEAR), theirs)
    assert not decision.promoted
    assert decision.reason == "not compared: champion v1 was scored on other test images"


def test_images_are_paired_by_name_not_by_order():
    mine = challenger(CLEAR)
    reordered = Challenger(mine.score, mine.fingerprint, dict(reversed(mine.per_image.items())))
    assert run(reordered, champion()) == run(mine, champion())


def test_the_same_scores_give_the_same_decision():
    assert run(challenger(NOISY), champion()) == run(challenger(NOISY), champion())


def test_scores_are_printed_with_enough_digits_to_tell_them_apart():
    assert format_pair(0.51, 0.5) == ("0.5100", "0.5000")
    assert format_pair(0.500012, 0.5) == ("0.50001", "0.50000")
    assert format_pair(0.5, 0.5) == ("0.50000000000", "0.50000000000")


def test_the_policy_imports_no_mlflow():
    root = Path(__file__).resolve().parent.parent
    check = (
        "import sys, harness.registry.policy; "
        "sys.exit(any(m.split('.')[0] == 'mlflow' for m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    assert subprocess.run([sys.executable, "-c", check], env=env, cwd=root).returncode == 0
