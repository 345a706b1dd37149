"""Test helpers: a trivially learnable dataset (bright discs on dark noise), store queries."""

import numpy as np

from harness.data import SegmentationSet, Splits

# A search space small enough for tests that run a real study: both depths, a log-scaled
# learning rate, a float and the median pruner from the first epoch.
TINY_SEARCH_SPACE = """
[study]
max_epochs = 3
image_size = 32
sampler_startup_trials = 2
pruner = "median"
pruner_startup_trials = 2
pruner_warmup_epochs = 0

[params.depth]
type = "int"
low = 2
high = 3

[params.lr]
type = "float"
low = 5e-3
high = 5e-2
log = true

[params.aug_p]
type = "float"
low = 0.0
high = 0.3

[fixed]
base_channels = 4
batch_size = 8
patience = 2
"""


def toy_set(n: int, size: int = 32, seed: int = 0) -> SegmentationSet:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    images = (rng.random((n, size, size, 3)) * 80).astype(np.uint8)
    masks = np.zeros((n, size, size), np.uint8)
    for i in range(n):
        cy, cx = rng.uniform(size * 0.3, size * 0.7, 2)
        radius = rng.uniform(size * 0.15, size * 0.3)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 < radius**2
        masks[i][disc] = 1
        images[i][disc] = rng.integers(150, 255, 3)
    species = (np.arange(n) % 2).astype(np.int8)
    names = tuple(f"toy-{i:03d}" for i in range(n))
    return SegmentationSet(images, masks, species, names)


def toy_splits(n_train: int = 48, n_val: int = 16, n_test: int = 16, size: int = 32) -> Splits:
    return Splits(
        train=toy_set(n_train, size, seed=1),
        val=toy_set(n_val, size, seed=2),
        test=toy_set(n_test, size, seed=3),
        spec=f"toy:{n_train}",
        image_size=size,
        fingerprint="toy0000000000000",
        from_cache=False,
    )


def running_runs(client, experiment_id: str) -> list:
    return [r for r in client.search_runs([experiment_id]) if r.info.status == "RUNNING"]
