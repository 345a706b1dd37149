"""Datasets on disk: the Oxford-IIIT Pet layout and a plain images + masks folder.

Loading happens in two steps so that the cache can be consulted in between:
`oxford_catalog` / `folder_catalog` only read list files and directory entries (cheap; a
folder's own split files are read by `split_files`),
`decode` reads, decodes and resizes every file (the expensive part the cache saves).

We parse the Oxford list files ourselves rather than going through
`torchvision.datasets.OxfordIIITPet`: that class insists on a `root/oxford-iiit-pet/`
parent folder and hands out one PIL image at a time, whereas here we want the user's folder
as given and one decode straight into a preallocated uint8 array. The list files are four
whitespace-separated columns, so the parser is a few lines.
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms import InterpolationMode
from torchvision.transforms.v2.functional import resize, to_dtype

from harness.data.split_files import DRAWN, TEST, read_split_files
from harness.errors import DataError

# Oxford-IIIT Pet trimap values.
TRIMAP_PET = 1
TRIMAP_BACKGROUND = 2
TRIMAP_BOUNDARY = 3

# What torchvision.io.decode_image reads; anything else in a folder is not an image to us.
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".gif")

# The Oxford split files; list.txt is their union (plus a comment header), so it adds nothing.
OXFORD_SPLIT_FILES = ("trainval.txt", "test.txt")

MaskKind = Literal["trimap", "binary"]


def trimap_to_mask(trimap: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Binary pet mask from an Oxford trimap: the boundary band counts as pet.

    The thin boundary band is where annotators could not decide; counting it as pet is the
    convention of the reference report and of DESIGN.md.
    """
    mask = np.not_equal(trimap, TRIMAP_BACKGROUND, out=out)
    return mask.view(np.uint8)


@dataclass(frozen=True)
class Catalog:
    """What a dataset on disk consists of, before anything is decoded."""

    root: Path
    names: tuple[str, ...]
    # Files as paths relative to root, in plain strings: the full Oxford set has 15,000
    # files, and building a pathlib.Path for each would cost more than the warm load itself.
    image_files: tuple[str, ...]
    mask_files: tuple[str, ...]
    mask_kind: MaskKind
    species: np.ndarray  # int8 per sample: 0 cat, 1 dog, -1 unknown
    # int8 per sample: the split a list pins it to (split_files.SPLITS), or DRAWN by seed;
    # None when nothing is pinned
    assigned: np.ndarray | None
    groups: np.ndarray | None = None  # int64 per sample: drawn together; None: one by one
    list_files: tuple[str, ...] = ()  # annotation files whose content is part of the data
    split_where: str | None = None  # named when a drawn split comes out empty; None: root

    def __len__(self) -> int:
        return len(self.names)

    def path(self, relative: str) -> Path:
        return self.root / relative

    def stamp(self) -> list[tuple[str, int, int]]:
        """(relative name, size, mtime) of every file the dataset is made of.

        Cheap enough to compute on every load (a stat per file), and any file added,
        removed or modified changes it: that is what keys the decode cache.
        """
        stamp = []
        root = str(self.root)
        for relative in (*self.list_files, *self.image_files, *self.mask_files):
            try:
                st = os.stat(os.path.join(root, relative))
            except OSError as exc:
                raise DataError(
                    f"{self.path(relative)}: cannot read ({exc.strerror or exc})"
                ) from None
            stamp.append((relative, st.st_size, st.st_mtime_ns))
        return stamp


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataError(f"{path}: {what} folder not found")


def _parse_oxford_list(path: Path) -> list[tuple[str, int]]:
    """(image name, species 0 = cat / 1 = dog) from one Oxford list file."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        raise DataError(
            f"{path}: not found (the Oxford-IIIT Pet layout has images/, annotations/trimaps/, "
            "annotations/trainval.txt and annotations/test.txt)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    entries = []
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        if len(fields) < 3 or fields[2] not in ("1", "2"):
            raise DataError(
                f"{path}:{number}: expected 'Image CLASS-ID SPECIES BREED-ID' with SPECIES "
                f"1 (cat) or 2 (dog), got {line.strip()!r}"
            )
        entries.append((fields[0], int(fields[2]) - 1))
    if not entries:
        raise DataError(f"{path}: lists no images")
    return entries


def oxford_catalog(root: Path) -> Catalog:
    """The Oxford-IIIT Pet layout: images/*.jpg, annotations/trimaps/*.png, split lists."""
    _require_dir(root, "oxford-pet dataset")
    annotations = root / "annotations"
    _require_dir(annotations, "oxford-pet annotations")
    names: list[str] = []
    species: list[int] = []
    is_test: list[bool] = []
    seen: dict[str, Path] = {}
    for list_name in OXFORD_SPLIT_FILES:
        list_file = annotations / list_name
        for name, kind in _parse_oxford_list(list_file):
            if name in seen:
                raise DataError(f"{list_file}: image {name} is listed twice (also in {seen[name]})")
            seen[name] = list_file
            names.append(name)
            species.append(kind)
            is_test.append(list_name == "test.txt")
    return Catalog(
        root=root,
        names=tuple(names),
        image_files=tuple(f"images/{name}.jpg" for name in names),
        mask_files=tuple(f"annotations/trimaps/{name}.png" for name in names),
        mask_kind="trimap",
        species=np.asarray(species, dtype=np.int8),
        assigned=np.where(is_test, TEST, DRAWN).astype(np.int8),
        list_files=tuple(f"annotations/{name}" for name in OXFORD_SPLIT_FILES),
    )


def _images_by_stem(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if path.name.startswith(".") or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if not path.is_file():
            continue
        if path.stem in found:
            raise DataError(f"{path}: same name as {found[path.stem].name}; stems must be unique")
        found[path.stem] = path
    return found


def folder_catalog(root: Path) -> Catalog:
    """A plain folder: images/ and masks/ paired by file stem, masks nonzero = foreground, and
    optionally its own splits (see split_files)."""
    _require_dir(root, "dataset")
    image_dir, mask_dir = root / "images", root / "masks"
    _require_dir(image_dir, "images")
    _require_dir(mask_dir, "masks")
    images = _images_by_stem(image_dir)
    if not images:
        raise DataError(f"{image_dir}: no images ({', '.join(IMAGE_SUFFIXES)})")
    masks = _images_by_stem(mask_dir)
    split = read_split_files(root, images)
    names = split.stems
    for name in names:
        if name not in masks:
            raise DataError(f"{images[name]}: mask missing (no {name}.* in {mask_dir})")
    return Catalog(
        root=root,
        names=names,
        image_files=tuple(f"images/{images[name].name}" for name in names),
        mask_files=tuple(f"masks/{masks[name].name}" for name in names),
        mask_kind="binary",
        species=np.full(len(names), -1, dtype=np.int8),
        assigned=split.assigned,
        groups=split.groups,
        list_files=split.files,
        split_where=split.where,
    )


@dataclass(frozen=True)
class Decoded:
    images: np.ndarray  # uint8 (N, S, S, 3)
    masks: np.ndarray  # uint8 (N, S, S), 0/1
    content_id: str  # hash of every file's bytes, names and species


def _read(path: Path) -> tuple[torch.Tensor, str]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not data:
        raise DataError(f"{path}: empty file")
    # hashlib releases the GIL on large buffers, so this runs in parallel with other decodes.
    digest = hashlib.sha1(data).hexdigest()
    return torch.frombuffer(bytearray(data), dtype=torch.uint8), digest


def _decode(data: torch.Tensor, path: Path, mode: ImageReadMode) -> torch.Tensor:
    try:
        return decode_image(data, mode=mode)
    except RuntimeError:
        # torchvision's message is a multi-line C++ trace; one line is what the user needs.
        raise DataError(
            f"{path}: not a readable image (corrupt, or not JPEG/PNG/WebP/GIF)"
        ) from None


def _mask_from_file(tensor: torch.Tensor, path: Path, kind: MaskKind) -> torch.Tensor:
    """(1, H, W) uint8 0/1 mask from a decoded trimap or binary mask."""
    if kind == "trimap":
        trimap = tensor[:1]
        low, high = int(trimap.min()), int(trimap.max())
        if low < TRIMAP_PET or high > TRIMAP_BOUNDARY:
            raise DataError(f"{path}: not a trimap (values must be 1, 2 or 3; found {low}..{high})")
        return torch.from_numpy(trimap_to_mask(trimap.numpy()))
    # Binary masks: any nonzero colour is foreground. An alpha channel says nothing about the class.
    colour = tensor[:1] if tensor.shape[0] <= 2 else tensor[:3]
    return (colour != 0).any(dim=0, keepdim=True).to(torch.uint8)


def decode(catalog: Catalog, image_size: int, workers: int | None = None) -> Decoded:
    """Read, decode and resize every image and mask of the catalog into uint8 arrays.

    Images are squashed to image_size x image_size (no crop: the foreground must stay in frame)
    with antialiased bilinear resizing; masks with exact nearest-neighbour, so they stay 0/1.
    """
    count = len(catalog)
    size = [image_size, image_size]
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    masks = np.empty((count, image_size, image_size), dtype=np.uint8)

    def load(index: int) -> tuple[str, str]:
        image_path = catalog.path(catalog.image_files[index])
        mask_path = catalog.path(catalog.mask_files[index])
        image_bytes, image_digest = _read(image_path)
        mask_bytes, mask_digest = _read(mask_path)
        # EXIF orientation is ignored on purpose: masks are drawn on the stored pixels.
        image = _decode(image_bytes, image_path, ImageReadMode.RGB)
        mask_tensor = _decode(mask_bytes, mask_path, ImageReadMode.UNCHANGED)
        if image.dtype != torch.uint8:  # 16-bit PNG
            image = to_dtype(image, torch.uint8, scale=True)
        if mask_tensor.dtype != torch.uint8:  # 16-bit PNG: keep the values, not the scale
            mask_tensor = mask_tensor.to(torch.int32)
        if image.shape[1:] != mask_tensor.shape[1:]:
            raise DataError(
                f"{mask_path}: mask is {mask_tensor.shape[2]}x{mask_tensor.shape[1]} but its image "
                f"{image_path.name} is {image.shape[2]}x{image.shape[1]}"
            )
        mask = _mask_from_file(mask_tensor, mask_path, catalog.mask_kind)
        image = resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)
        mask = resize(mask, size, interpolation=InterpolationMode.NEAREST_EXACT)
        images[index] = image.permute(1, 2, 0).numpy()
        masks[index] = mask[0].numpy()
        return image_digest, mask_digest

    # Decoding and resizing release the GIL, so threads use every core without pickling.
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        try:
            digests = list(pool.map(load, range(count)))
        except BaseException:
            pool.shutdown(cancel_futures=True)  # fail fast instead of decoding the rest
            raise

    content = hashlib.sha256()
    for name, kind, (image_digest, mask_digest) in zip(
        catalog.names, catalog.species.tolist(), digests, strict=True
    ):
        content.update(f"{name}\t{kind}\t{image_digest}\t{mask_digest}\n".encode())
    return Decoded(images=images, masks=masks, content_id=content.hexdigest())
