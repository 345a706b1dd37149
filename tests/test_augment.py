"""Augmentation: one probability, image and mask moved together, seeded."""

import math

import numpy as np
import pytest

from harness.augment import augment_batch, build_augmentation


def marked_batch(count=16, size=32, seed=0):
    """Dark noisy images with one bright rectangle each; the mask marks the rectangle."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, (count, size, size, 3), dtype=np.uint8)
    masks = np.zeros((count, size, size), np.uint8)
    for i in range(count):
        # Off-centre and asymmetric, so that a flip or a shift moves it visibly.
        y0, x0 = rng.integers(2, size // 3, 2)
        h, w = rng.integers(size // 4, size // 2, 2)
        images[i, y0 : y0 + h, x0 : x0 + w] = 230
        masks[i, y0 : y0 + h, x0 : x0 + w] = 1
    return images, masks


def test_zero_probability_is_no_pipeline_and_identity():
    assert build_augmentation(0.0, seed=0) is None
    images, masks = marked_batch()
    out_images, out_masks = augment_batch(None, images, masks)
    assert np.array_equal(out_images, images) and np.array_equal(out_masks, masks)


@pytest.mark.parametrize("aug_p", [-0.1, 1.5, math.nan, math.inf])
def test_probability_outside_unit_interval_is_refused(aug_p):
    with pytest.raises(ValueError, match="aug_p"):
        build_augmentation(aug_p, seed=0)


def test_full_probability_changes_images_and_keeps_masks_aligned():
    images, masks = marked_batch()
    out_images, out_masks = augment_batch(build_augmentation(1.0, seed=0), images, masks)

    assert out_images.shape == images.shape and out_images.dtype == np.uint8
    assert out_masks.shape == masks.shape and out_masks.dtype == np.uint8
    assert set(np.unique(out_masks)) <= {0, 1}  # nearest interpolation: still binary
    assert not np.array_equal(out_images, images)
    assert not np.array_equal(out_masks, masks)  # geometry applied to the mask too
    # The bright rectangle and the mask moved together: bright pixels are the mask pixels.
    for image, mask in zip(out_images, out_masks, strict=True):
        bright = image.mean(axis=-1) > 128
        overlap = (bright & (mask == 1)).sum() / max(1, (bright | (mask == 1)).sum())
        assert overlap > 0.8


def test_same_seed_same_batches_other_seed_other_batches():
    images, masks = marked_batch()
    first, second = build_augmentation(0.5, seed=7), build_augmentation(0.5, seed=7)
    for _ in range(3):  # the whole sequence repeats, not just the first batch
        a, b = augment_batch(first, images, masks), augment_batch(second, images, masks)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    other = augment_batch(build_augmentation(0.5, seed=8), images, masks)
    assert not np.array_equal(
        other[0], augment_batch(build_augmentation(0.5, seed=7), images, masks)[0]
    )


def test_low_probability_leaves_most_images_untouched():
    images, masks = marked_batch(count=64)
    out_images, _ = augment_batch(build_augmentation(0.05, seed=0), images, masks)
    unchanged = [np.array_equal(a, b) for a, b in zip(out_images, images, strict=True)]
    # Four transforms at p = 0.05 leave an image alone with probability 0.95**4 ~ 0.81.
    assert 0.6 < np.mean(unchanged) < 0.97
