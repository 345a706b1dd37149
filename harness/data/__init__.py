"""Datasets for binary foreground segmentation: generated pets, Oxford-IIIT Pet, or a folder.

splits = load_splits("oxford-pet:/data/pets", image_size=64)
splits.train.images  # uint8 (N, 64, 64, 3); splits.train.masks uint8 (N, 64, 64), 1 = foreground
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
