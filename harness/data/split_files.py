"""A folder dataset's own splits: `splits/{train,val,test}.txt` lists and a `groups.csv`.

Lists pin images to a split (one stem or image file name a line; blank lines and `#` comments
are skipped). A split without a list is drawn by seed from the images no list names; when all
three lists are there, images none of them names are left out, as Oxford's are.

`groups.csv` (`stem,group` rows, an optional header) keeps the images of one group (frames of
one video, scans of one patient) on one side of every split: splits are then drawn whole
groups at a time. An image without a row is a group of its own. With lists too, a group must
lie in one list or in none: drawing part of it apart is the leak the file is there to prevent.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.errors import DataError

SPLITS = ("train", "val", "test")
TRAIN, VAL, TEST = range(len(SPLITS))  # a split's number: its place in SPLITS
DRAWN = -1  # in no list: drawn by seed
SPLITS_DIR = "splits"
GROUPS_FILE = "groups.csv"


@dataclass(frozen=True)
class SplitFiles:
    """What a folder's split files say, per image in the dataset."""

    stems: tuple[str, ...]  # sorted; without the images that three lists leave out
    assigned: np.ndarray | None  # int8 per stem: its list's split number or DRAWN; None: no lists
    groups: np.ndarray | None  # int64 per stem: its group's number; None: no groups.csv
    files: tuple[str, ...]  # the files read, relative to the dataset's root
    where: str  # the file or folder to name when a drawn split comes out empty


def read_split_files(root: Path, images: dict[str, Path]) -> SplitFiles:
    """The split lists and groups of the folder dataset at root, if it has any.

    `images` maps each stem of images/ to its file. Raises DataError, with one line naming the
    file, for an unknown image, an image in two lists, an empty list, a malformed row, or a
    group that the lists would cut in two.
    """
    names = _Names(images, root / "images")
    lists = _read_lists(root / SPLITS_DIR, names)
    groups_path = root / GROUPS_FILE
    group_of = _read_groups(groups_path, names) if groups_path.is_file() else None

    stems = sorted(images)
    files = [f"{SPLITS_DIR}/{SPLITS[split]}.txt" for split in lists]
    assigned = None
    if lists:
        split_of = {stem: split for split, members in lists.items() for stem in members}
        if len(lists) == len(SPLITS):
            stems = [stem for stem in stems if stem in split_of]
        assigned = np.array([split_of.get(stem, DRAWN) for stem in stems], dtype=np.int8)
    groups = None
    if group_of is not None:
        files.append(GROUPS_FILE)
        # An image without a row is a group of its own; numbers follow the first image, so
        # renaming a group changes nothing.
        keys = [
            ("group", group_of[stem]) if stem in group_of else ("image", stem) for stem in stems
        ]
        numbers: dict[tuple[str, str], int] = {}
        groups = np.array([numbers.setdefault(key, len(numbers)) for key in keys], dtype=np.int64)
        if assigned is not None:
            _check_groups_stay_whole(groups_path, stems, group_of, assigned)
    where = groups_path if group_of is not None else root / SPLITS_DIR if lists else root
    return SplitFiles(tuple(stems), assigned, groups, tuple(files), str(where))


@dataclass(frozen=True)
class _Names:
    """Resolves a line of a split file to a stem: the stem itself or the image's file name."""

    images: dict[str, Path]
    image_dir: Path

    def find(self, entry: str) -> str | None:
        if entry in self.images:
            return entry
        stem = Path(entry).stem
        return stem if stem in self.images and self.images[stem].name == entry else None

    def stem(self, entry: str, path: Path, number: int) -> str:
        stem = self.find(entry)
        if stem is None:
            raise DataError(f"{path}:{number}: no image {entry!r} in {self.image_dir}")
        return stem


def _meaningful_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, stripped text) of each line that is neither blank nor a # comment."""
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: drops a spreadsheet's byte-order mark
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read ({exc})") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line and not line.startswith("#"):
            yield number, line


def _read_lists(folder: Path, names: _Names) -> dict[int, list[str]]:
    """{split number: stems} of the lists in folder; none when there is no such folder."""
    if not folder.is_dir():
        return {}
    expected = ", ".join(f"{name}.txt" for name in SPLITS)
    for path in sorted(folder.glob("*.txt")):
        if path.stem not in SPLITS:  # a valid.txt silently ignored would be a random split
            raise DataError(f"{path}: not a split list (the lists are {expected})")
    lists: dict[int, list[str]] = {}
    seen: dict[str, tuple[Path, int]] = {}
    for split, name in enumerate(SPLITS):
        path = folder / f"{name}.txt"
        if not path.is_file():
            continue
        members = []
        for number, entry in _meaningful_lines(path):
            stem = names.stem(entry, path, number)
            if stem in seen:
                other, line = seen[stem]
                also = f"line {line}" if other == path else f"{other}:{line}"
                raise DataError(f"{path}:{number}: {stem} is listed twice (also {also})")
            seen[stem] = (path, number)
            members.append(stem)
        if not members:
            raise DataError(f"{path}: lists no images (without the file the split is drawn)")
        lists[split] = members
    if not lists:
        raise DataError(f"{folder}: none of {expected} in it")
    return lists


def _read_groups(path: Path, names: _Names) -> dict[str, str]:
    """{stem: group} from groups.csv; a first row that names no image is a header."""
    group_of: dict[str, str] = {}
    row_of: dict[str, int] = {}
    lines = list(_meaningful_lines(path))
    rows = csv.reader([text for _, text in lines])
    for index, ((number, text), row) in enumerate(zip(lines, rows, strict=True)):
        cells = [cell.strip() for cell in row]
        if index == 0 and len(cells) == 2 and names.find(cells[0]) is None:
            continue  # a header, whatever its column names
        if len(cells) != 2 or not all(cells):
            raise DataError(f"{path}:{number}: expected 'stem,group', got {text!r}")
        stem = names.stem(cells[0], path, number)
        if stem in row_of:
            raise DataError(f"{path}:{number}: {stem} has a row already (line {row_of[stem]})")
        row_of[stem] = number
        group_of[stem] = cells[1]
    if not group_of:
        raise DataError(f"{path}: no 'stem,group' rows")
    return group_of


def _check_groups_stay_whole(
    path: Path, stems: list[str], group_of: dict[str, str], assigned: np.ndarray
) -> None:
    """Refuse a group that the lists put in two splits, or partly in a list and partly not."""
    first: dict[str, tuple[str, int]] = {}
    for stem, split in zip(stems, assigned.tolist(), strict=True):
        if stem not in group_of:
            continue
        other, other_split = first.setdefault(group_of[stem], (stem, split))
        if other_split != split:
            raise DataError(
                f"{path}: group {group_of[stem]!r} would be cut in two: "
                f"{_placement(other, other_split)} but {_placement(stem, split)}"
            )


def _placement(stem: str, split: int) -> str:
    if split == DRAWN:
        return f"{stem} is in no list"
    return f"{stem} is in {SPLITS_DIR}/{SPLITS[split]}.txt"
