"""Datasets for binary pet segmentation: generated, Oxford-IIIT Pet, or a plain folder.

splits = load_splits("oxford-pet:/data/pets", image_size=64)
splits.train.images  # uint8 (N, 64, 64, 3); splits.train.masks uint8 (N, 64, 64), 1 = pet
"""

from harness.data.dataset import (
    DEFAULT_SPEC,
    SPECIES,
    SegmentationSet,
    Splits,
    load_splits,
    take,
)

__all__ = ["DEFAULT_SPEC", "SPECIES", "SegmentationSet", "Splits", "load_splits", "take"]
