"""Decode-once on-disk cache of a dataset's arrays.

One entry is one folder `<cache dir>/<kind>-<size>px-<hash of key>/` holding one `.npy`
file per array and a `meta.json` with the full key. An entry is written into a temporary
folder and renamed into place at the end, so a folder under its final name is always
complete, and nothing of a failed load ever appears there.

Rows are stored in the order the caller asks for (load_splits: train, then val, then test),
and arrays are opened memory-mapped: a warm load is then instant at any size, each split is
a slice of the mapped file, and no image is held in memory until a batch reads it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Bump when the layout of an entry changes, so old entries are ignored instead of misread.
FORMAT_VERSION = 2
WRITE_CHUNK_ROWS = 64  # rows copied per write when reordering
ENV_VAR = "HARNESS_CACHE_DIR"


@dataclass(frozen=True)
class Entry:
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]


def default_cache_dir() -> Path:
    """$HARNESS_CACHE_DIR if set, else ~/.cache/harness."""
    configured = os.environ.get(ENV_VAR)
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "harness"


def key_digest(key: dict[str, Any]) -> str:
    text = json.dumps({"format": FORMAT_VERSION, **key}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def entry_path(cache_dir: Path, key: dict[str, Any]) -> Path:
    return cache_dir / f"{key['kind']}-{key['image_size']}px-{key_digest(key)}"


def load(cache_dir: Path, key: dict[str, Any]) -> Entry | None:
    """The entry stored under key, or None on a miss."""
    path = entry_path(cache_dir, key)
    if not (path / "meta.json").is_file():
        return None
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError):
        return _discard(path)
    if meta.get("key") != key or meta.get("format") != FORMAT_VERSION:
        return None  # a digest collision; vanishingly unlikely, but never serve the wrong data
    try:
        arrays = {name: np.load(path / f"{name}.npy", mmap_mode="r") for name in meta["arrays"]}
    except (OSError, ValueError, KeyError):
        return _discard(path)
    return Entry(arrays=arrays, meta=meta["meta"])


def _discard(path: Path) -> None:
    # Only a damaged entry gets here (disk trouble, manual tampering): drop it and rebuild.
    warnings.warn(f"ignoring damaged data cache entry {path}", stacklevel=3)
    shutil.rmtree(path, ignore_errors=True)
    return None


def store(
    cache_dir: Path,
    key: dict[str, Any],
    arrays: dict[str, np.ndarray],
    meta: dict,
    order: np.ndarray,
) -> bool:
    """Write an entry atomically, rows in `order`; True when it is in place afterwards.

    A cache that cannot be written (read-only home, full disk) only costs speed, so this
    warns instead of failing the load.
    """
    final = entry_path(cache_dir, key)
    tmp: Path | None = None
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=cache_dir))
        for name, array in arrays.items():
            _save_rows(tmp / f"{name}.npy", array, order)
        record = {"format": FORMAT_VERSION, "key": key, "arrays": sorted(arrays), "meta": meta}
        (tmp / "meta.json").write_text(json.dumps(record))
        os.rename(tmp, final)
        return True
    except OSError as exc:
        if (final / "meta.json").exists():
            return True  # another process stored the same entry first
        warnings.warn(f"could not write data cache {final}: {exc}", stacklevel=2)
        return False
    finally:
        # Whatever happened (full disk, Ctrl-C), leave no half-written entry behind.
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _save_rows(path: Path, array: np.ndarray, order: np.ndarray) -> None:
    """np.save of `array[order]`, streamed a few rows at a time: the reordered copy never
    exists in memory (nor in a mapping, whose written pages would count as ours)."""
    header = {
        "descr": np.lib.format.dtype_to_descr(array.dtype),
        "fortran_order": False,
        "shape": (len(order), *array.shape[1:]),
    }
    with open(path, "wb") as file:
        np.lib.format.write_array_header_1_0(file, header)
        for start in range(0, len(order), WRITE_CHUNK_ROWS):
            file.write(array[order[start : start + WRITE_CHUNK_ROWS]].tobytes())


def load_or_build(
    cache_dir: Path,
    key: dict[str, Any],
    build: Callable[[], tuple[dict[str, np.ndarray], dict[str, Any]]],
    order: np.ndarray,
) -> tuple[Entry, bool]:
    """The cached entry for key, building and storing it on a miss; (entry, was_cached).

    `order` (a permutation of the rows) is applied to every array before it is stored.
    """
    entry = load(cache_dir, key)
    if entry is not None:
        return entry, True
    arrays, meta = build()
    if store(cache_dir, key, arrays, meta, order):
        # Hand out the memory-mapped copy: the freshly built arrays die when this returns.
        stored = load(cache_dir, key)
        if stored is not None:
            return stored, False
    return Entry(arrays={name: array[order] for name, array in arrays.items()}, meta=meta), False
