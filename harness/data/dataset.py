"""The dataset as the rest of the harness sees it: `load_splits(spec)` -> train/val/test.

A spec names a source (`synthetic[:N]`, `oxford-pet:PATH`, `folder:PATH`); loading it goes
through the decode-once cache, then the samples are split with a fixed seed (a folder may
pin or group them with its own split files: see split_files).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import mmap
import operator
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from harness.data import cache, sources, synthetic
from harness.data.split_files import DRAWN, SPLITS, TEST, TRAIN, VAL
from harness.errors import DataError
from harness.stopping import interruptible

SPECIES = ("cat", "dog")
DEFAULT_SPEC = "synthetic"
DEFAULT_SYNTHETIC_COUNT = 1000
VAL_FRACTION = 0.15
TEST_FRACTION = 0.15  # only for sources without an official test split
FRACTIONS = {VAL: VAL_FRACTION, TEST: TEST_FRACTION}

SourceKind = Literal["synthetic", "oxford-pet", "folder"]


@dataclass(frozen=True, eq=False)  # eq=False: arrays do not compare to one bool
class SegmentationSet:
    images: np.ndarray  # uint8, (N, H, W, 3), RGB, C-contiguous
    masks: np.ndarray  # uint8, (N, H, W), 1 = foreground, 0 = background
    species: np.ndarray  # int8, (N,), 0 = cat, 1 = dog, -1 = unknown
    names: tuple[str, ...]  # per-image id: file stem, or "synthetic-000042"

    def __post_init__(self) -> None:
        count = len(self.names)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[3] != 3:
            raise ValueError(
                f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}"
            )
        if self.masks.dtype != np.uint8 or self.masks.shape != self.images.shape[:3]:
            raise ValueError(
                f"masks must be uint8 {self.images.shape[:3]}, got {self.masks.dtype} {self.masks.shape}"
            )
        if self.species.shape != (count,) or len(self.images) != count:
            raise ValueError(
                f"{count} names but {len(self.images)} images and {self.species.shape} species"
            )

    def __len__(self) -> int:
        return len(self.names)

    def subset(self, indices) -> SegmentationSet:
        """The samples at indices (a sequence of ints or a boolean mask), copied."""
        index = np.asarray(indices)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        index = index.astype(np.intp, copy=False)
        return SegmentationSet(
            images=take(self.images, index),
            masks=take(self.masks, index),
            species=take(self.species, index),
            names=tuple(self.names[i] for i in index.tolist()),
        )

    def rows(self, start: int, stop: int) -> SegmentationSet:
        """Samples start to stop as views: nothing is copied or read."""
        return SegmentationSet(
            images=self.images[start:stop],
            masks=self.masks[start:stop],
            species=self.species[start:stop],
            names=self.names[start:stop],
        )

    def batch(self, index: np.ndarray | slice) -> tuple[np.ndarray, np.ndarray]:
        """(images, masks) at index, as in-memory arrays the caller may modify."""
        return take(self.images, index), take(self.masks, index)


TAKE_CHUNK = 32  # rows copied between two releases of a memory-mapped source's pages


def take(array: np.ndarray, index: np.ndarray | slice) -> np.ndarray:
    """`array[index]` as a new in-memory array, without a mapped file's pages piling up.

    Splits are slices of the memory-mapped cache file. Pages of that file that a read touches
    count as our resident memory until released: an epoch over the Oxford set at 256x256 would
    end up holding all 1.9 GB of it. Releasing them after each chunk (MADV_DONTNEED: they stay
    in the page cache, only our mapping lets go) keeps the data's share of memory at a batch.
    """
    if isinstance(index, slice):
        index = np.arange(*index.indices(len(array)))
    mapping = getattr(array, "_mmap", None)  # set on np.load(mmap_mode=...) arrays and views
    if mapping is None:
        return np.asarray(array[index])
    out = np.empty((len(index), *array.shape[1:]), array.dtype)
    for start in range(0, len(index), TAKE_CHUNK):
        chunk = index[start : start + TAKE_CHUNK]
        out[start : start + len(chunk)] = array[chunk]
        mapping.madvise(mmap.MADV_DONTNEED)
    return out


@dataclass(frozen=True, eq=False)
class Splits:
    train: SegmentationSet
    val: SegmentationSet
    test: SegmentationSet
    spec: str  # normalised: "synthetic:1000", "oxford-pet:/abs/path", "folder:/abs/path"
    image_size: int
    fingerprint: str  # 16 hex chars: same source content, image size and split
    from_cache: bool  # True when the decoded arrays came from the on-disk cache


@dataclass(frozen=True)
class DataSpec:
    kind: SourceKind
    path: Path | None = None  # oxford-pet and folder
    count: int | None = None  # synthetic

    def __str__(self) -> str:
        return f"{self.kind}:{self.count if self.kind == 'synthetic' else self.path}"


_SPEC_HELP = "expected synthetic, synthetic:N, oxford-pet:PATH or folder:PATH"


def parse_spec(spec: str) -> DataSpec:
    """Parse a --data value; paths become absolute so the spec names one dataset anywhere."""
    kind, _, rest = spec.strip().partition(":")
    if kind == "synthetic":
        if not rest:
            return DataSpec("synthetic", count=DEFAULT_SYNTHETIC_COUNT)
        try:
            count = int(rest)
        except ValueError:
            raise DataError(
                f"bad data spec {spec!r}: N in synthetic:N must be a whole number"
            ) from None
        if count < 3:
            raise DataError(f"bad data spec {spec!r}: synthetic needs at least 3 images to split")
        return DataSpec("synthetic", count=count)
    if kind in ("oxford-pet", "folder"):
        if not rest:
            raise DataError(f"bad data spec {spec!r}: {kind} needs a path, as in {kind}:PATH")
        return DataSpec(kind, path=Path(rest).expanduser().resolve())
    raise DataError(f"bad data spec {spec!r}: {_SPEC_HELP}")


def check_image_size(image_size: int) -> int:
    """The image size as a plain int; numpy integers pass, floats and bools do not."""
    if isinstance(image_size, bool):
        raise DataError(f"image size must be a whole number, got {image_size!r}")
    try:
        size = operator.index(image_size)
    except TypeError:
        raise DataError(f"image size must be a whole number, got {image_size!r}") from None
    # Multiples of 16 survive the four 2x poolings of the deepest UNet the search tries.
    if size < 16 or size % 16:
        raise DataError(f"image size must be a multiple of 16 and at least 16, got {size}")
    return size


def split_indices(
    count: int,
    seed: int,
    assigned: np.ndarray | None = None,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted (train, val, test) indices.

    `assigned` pins samples to a split (an official test split, a folder's split lists); the
    splits that no sample is pinned to are drawn by seed from the samples marked DRAWN, whole
    groups at a time when `groups` gives each sample a group number. Drawn validation and test
    splits take their fraction of the drawn samples and train the rest; when train is pinned,
    they share all of the rest. A split comes out empty when there is too little to draw from.
    """
    if assigned is None:
        assigned = np.full(count, DRAWN, dtype=np.int8)
    parts = [np.flatnonzero(assigned == split) for split in range(len(SPLITS))]
    free = np.flatnonzero(assigned == DRAWN)
    drawn = [split for split in (TEST, VAL, TRAIN) if len(parts[split]) == 0]
    if not drawn or not len(free):
        return parts[TRAIN], parts[VAL], parts[TEST]

    # Units are what is drawn: groups, or single samples. Samples are put in the order of
    # their unit's place in a random permutation; with single samples this is exactly
    # rng.permutation(free), the order splits had before groups existed.
    unit = (
        np.arange(len(free)) if groups is None else np.unique(groups[free], return_inverse=True)[1]
    )
    units = int(unit.max()) + 1
    rank = np.empty(units, dtype=np.intp)
    rank[np.random.default_rng(seed).permutation(units)] = np.arange(units)
    order = free[np.argsort(rank[unit], kind="stable")]
    # bounds[k]: how many samples the first k units of the order hold
    bounds = np.concatenate([[0], np.cumsum(np.bincount(rank[unit], minlength=units))])

    shares = {split: FRACTIONS[split] for split in drawn if split != TRAIN}
    if TRAIN not in drawn:
        shares = {split: share / sum(shares.values()) for split, share in shares.items()}
    taken = target = 0  # units drawn so far, and the samples they were meant to hold
    for position, split in enumerate(drawn):
        later = len(drawn) - position - 1  # splits still to draw, each needing a unit
        if later == 0:
            stop = units
        else:
            target += max(1, round(shares[split] * len(free)))
            # the cut between units nearest the target that leaves a unit to each later split
            cuts = range(taken + 1, units - later + 1)
            stop = min(cuts, key=lambda k: abs(int(bounds[k]) - target), default=taken)
        parts[split] = order[bounds[taken] : bounds[stop]]
        taken = stop
    return np.sort(parts[TRAIN]), np.sort(parts[VAL]), np.sort(parts[TEST])


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


Build = Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]]


@dataclass(frozen=True)
class _Plan:
    """What to load: enough to split and to find the cache entry without decoding."""

    where: str  # named when a split comes out empty
    count: int
    assigned: np.ndarray | None
    groups: np.ndarray | None
    cache_key: dict[str, Any]
    build: Build


def _synthetic_plan(source: DataSpec, image_size: int) -> _Plan:
    count = source.count
    assert count is not None
    key = {
        "kind": "synthetic",
        "generator": synthetic.GENERATOR_VERSION,
        "seed": synthetic.DEFAULT_SEED,
        "count": count,
        "image_size": image_size,
    }
    # The generator's parameters are its content: the same numbers give the same pictures.
    content_id = _digest({k: v for k, v in key.items() if k != "image_size"})

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        images, masks, species = synthetic.generate(count, image_size, synthetic.DEFAULT_SEED)
        names = [f"synthetic-{i:06d}" for i in range(count)]
        arrays = {"images": images, "masks": masks, "species": species}
        return arrays, {"names": names, "content_id": content_id}

    return _Plan(str(source), count, None, None, key, build)


def _files_plan(source: DataSpec, image_size: int) -> _Plan:
    assert source.path is not None
    if source.kind == "oxford-pet":
        catalog = sources.oxford_catalog(source.path)
    else:
        catalog = sources.folder_catalog(source.path)
    key = {
        "kind": source.kind,
        "path": str(source.path),
        "image_size": image_size,
        "files": _digest(catalog.stamp()),
    }

    def build() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        decoded = sources.decode(catalog, image_size)
        content_id = decoded.content_id
        if source.kind == "folder" and catalog.list_files:
            # A folder's split files are part of its content: the same images split by other
            # lists or groups make studies that must not be compared.
            rule = [_as_list(catalog.assigned), _as_list(catalog.groups)]
            content_id = _digest([content_id, rule])
        arrays = {"images": decoded.images, "masks": decoded.masks, "species": catalog.species}
        return arrays, {"names": list(catalog.names), "content_id": content_id}

    where = catalog.split_where or str(source.path)
    return _Plan(where, len(catalog), catalog.assigned, catalog.groups, key, build)


def _as_list(array: np.ndarray | None) -> list[int] | None:
    return None if array is None else array.tolist()


def _drawn_from(plan: _Plan) -> str:
    """What a split was drawn from, in words: "12 images", "40 images in 5 groups"."""
    free = np.ones(plan.count, dtype=bool) if plan.assigned is None else plan.assigned == DRAWN
    images = f"{int(free.sum())} images"
    if plan.groups is None:
        return images
    return f"{images} in {len(np.unique(plan.groups[free]))} groups"


@interruptible  # it writes nothing but its cache, and that atomically
def load_splits(
    spec: str = DEFAULT_SPEC,
    image_size: int = 64,
    *,
    split_seed: int = 0,
    cache_dir: Path | None = None,
) -> Splits:
    """Load a dataset (decoding at most once per cache) and split it train/val/test.

    Raises DataError, with one line naming the file or folder, for anything the user can fix.
    """
    image_size = check_image_size(image_size)
    source = parse_spec(spec)
    plan = (
        _synthetic_plan(source, image_size)
        if source.kind == "synthetic"
        else _files_plan(source, image_size)
    )
    # Split before decoding, so that a dataset too small to split fails before it is cached.
    parts = split_indices(plan.count, split_seed, plan.assigned, plan.groups)
    for name, indices in zip(SPLITS, parts, strict=True):
        if len(indices) == 0:
            raise DataError(
                f"{plan.where}: too few to draw a {name} split from ({_drawn_from(plan)})"
            )

    # Stored in split order (train, val, test), each split is a slice of the cached arrays.
    order = np.concatenate(parts)

    def build_in_split_order() -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        arrays, meta = plan.build()
        names = meta["names"]
        return arrays, {**meta, "names": [names[i] for i in order.tolist()]}

    cache_dir = Path(cache_dir) if cache_dir is not None else cache.default_cache_dir()
    key = {**plan.cache_key, "order": _digest(order.tolist())[:16]}
    entry, from_cache = cache.load_or_build(cache_dir, key, build_in_split_order, order)
    full = SegmentationSet(
        images=entry.arrays["images"],
        masks=entry.arrays["masks"],
        species=entry.arrays["species"],
        names=tuple(entry.meta["names"]),
    )
    bounds = np.cumsum([0, *map(len, parts)]).tolist()
    train, val, test = (full.rows(a, b) for a, b in itertools.pairwise(bounds))
    fingerprint = _digest(
        [entry.meta["content_id"], image_size, list(train.names), list(val.names), list(test.names)]
    )[:16]
    return Splits(
        train=train,
        val=val,
        test=test,
        spec=str(source),
        image_size=image_size,
        fingerprint=fingerprint,
        from_cache=from_cache,
    )
