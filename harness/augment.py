"""Training-time augmentation: one probability, aug_p, for every transform.

A single knob keeps the search space small (the reference report used albumentations with
p = 0.2 throughout). Image and mask go through the same geometric transform; the mask with
nearest-neighbour interpolation, so it stays 0/1. Validation and test data are never
augmented: the trainer only calls this on training batches.
"""

from __future__ import annotations

import math
import os

# albumentations asks PyPI for a newer version on every import (a request of up to 2 s, and
# a warning when offline); the harness pins its versions and must work without a network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402


def build_augmentation(aug_p: float, seed: int) -> albumentations.Compose | None:
    """The augmentation pipeline, or None when aug_p == 0 (nothing to do, skip the work).

    Each transform fires independently with probability aug_p (so at aug_p = 1 every image
    is mirrored, and the random part is the affine and colour parameters). Seeded: two
    pipelines built with the same seed produce the same sequence of batches.
    """
    if not (isinstance(aug_p, int | float) and math.isfinite(aug_p) and 0.0 <= aug_p <= 1.0):
        raise ValueError(f"aug_p must be a probability in [0, 1], got {aug_p!r}")
    if aug_p == 0:
        return None
    return albumentations.Compose(
        [
            albumentations.HorizontalFlip(p=aug_p),
            albumentations.Affine(
                scale=(0.9, 1.1),
                translate_percent=(-0.0625, 0.0625),
                rotate=(-15, 15),
                interpolation=cv2.INTER_LINEAR,
                mask_interpolation=cv2.INTER_NEAREST,
                # Reflecting fills the corners with plausible content in image and mask alike.
                border_mode=cv2.BORDER_REFLECT_101,
                p=aug_p,
            ),
            albumentations.RandomBrightnessContrast(
                brightness_limit=0.2, contrast_limit=0.2, p=aug_p
            ),
            albumentations.HueSaturationValue(
                hue_shift_limit=10, sat_shift_limit=20, val_shift_limit=10, p=aug_p
            ),
        ],
        seed=seed,
    )


def augment_batch(
    pipeline: albumentations.Compose | None, images: np.ndarray, masks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Augment (B, H, W, 3) uint8 images and (B, H, W) uint8 masks; same shapes and dtypes out."""
    if pipeline is None:
        return images, masks
    out_images = np.empty_like(images)
    out_masks = np.empty_like(masks)
    for i in range(len(images)):
        result = pipeline(image=images[i], mask=masks[i])
        out_images[i] = result["image"]
        out_masks[i] = result["mask"]
    return out_images, out_masks
