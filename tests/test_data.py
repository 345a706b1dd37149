"""Data layer: Oxford-IIIT Pet layout, plain folders and their split files, the decode cache,
the generator."""

import os
import shutil

import numpy as np
import pytest
from PIL import Image

from harness.data import DEFAULT_SPEC, SPECIES, SegmentationSet, load_splits
from harness.data.dataset import parse_spec, split_indices
from harness.data.sources import trimap_to_mask
from harness.data.synthetic import generate, generate_trimaps
from harness.errors import DataError

# Oxford names: capitalised breeds are cats, lower-case ones dogs (as in the real lists).
CAT_NAMES = [f"Abyssinian_{i}" for i in range(1, 7)] + [f"Bengal_{i}" for i in range(1, 4)]
DOG_NAMES = [f"beagle_{i}" for i in range(1, 6)] + [f"pug_{i}" for i in range(1, 5)]
TEST_NAMES = {"Abyssinian_5", "Abyssinian_6", "Bengal_3", "beagle_5", "pug_3", "pug_4"}
GRAYSCALE, PNG_CONTENT, ALL_BOUNDARY = "Bengal_1", "beagle_1", "pug_1"

LIST_HEADER = """#Image CLASS-ID SPECIES BREED ID
#ID: 1:37 Class ids
#SPECIES: 1:Cat 2:Dog
#BREED ID: 1-25:Cat 1:12:Dog
#All images with 1st letter as captial are cat images
#images with small first letter are dog images
"""

# Pet pixels are red, background blue, so a mask can be checked against its image.
RED, BLUE = (220, 30, 30), (30, 40, 200)


def scene(width: int, height: int, box: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(RGB image, trimap): a red box (pet) with a 1-pixel boundary band on blue."""
    image = np.empty((height, width, 3), np.uint8)
    image[:] = BLUE
    trimap = np.full((height, width), 2, np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = RED
    trimap[y0:y1, x0:x1] = 3
    trimap[y0 + 1 : y1 - 1, x0 + 1 : x1 - 1] = 1
    return image, trimap


def write_oxford(root, names=None):
    """A tiny dataset in the exact Oxford-IIIT Pet layout, with its awkward files."""
    names = names or CAT_NAMES + DOG_NAMES
    (root / "images").mkdir(parents=True)
    (root / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = {}
    for number, name in enumerate(names):
        width, height = int(rng.integers(40, 72)), int(rng.integers(32, 60))
        x0, y0 = int(rng.integers(0, width // 3)), int(rng.integers(0, height // 3))
        image, trimap = scene(width, height, (x0, y0, x0 + width // 2, y0 + height // 2))
        if name == ALL_BOUNDARY:
            trimap[:] = 3
        picture = Image.fromarray(image)
        if name == GRAYSCALE:
            picture.convert("L").save(root / "images" / f"{name}.jpg", quality=95)
        elif name == PNG_CONTENT:  # real Oxford has PNG data behind a .jpg name
            picture.save(root / "images" / f"{name}.jpg", format="PNG")
        else:
            picture.save(root / "images" / f"{name}.jpg", quality=95)
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")
        species = 1 if name[0].isupper() else 2
        lines[name] = f"{name} {number % 37 + 1} {species} {number % 12 + 1}\n"
    annotations = root / "annotations"
    (annotations / "list.txt").write_text(LIST_HEADER + "".join(lines.values()))
    (annotations / "trainval.txt").write_text(
        "".join(line for name, line in lines.items() if name not in TEST_NAMES)
    )
    (annotations / "test.txt").write_text(
        "".join(line for name, line in lines.items() if name in TEST_NAMES)
    )
    return root


def write_folder(root, count=10):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir(parents=True)
    for i in range(count):
        image, trimap = scene(48, 40, (5 + i, 6, 30 + i, 30))
        suffix = "png" if i % 2 else "jpg"
        Image.fromarray(image).save(root / "images" / f"img{i:02d}.{suffix}")
        Image.fromarray(trimap_to_mask(trimap) * 255).save(root / "masks" / f"img{i:02d}.png")
    return root


@pytest.fixture
def oxford(tmp_path):
    return write_oxford(tmp_path / "pets")


@pytest.fixture
def folder(tmp_path):
    return write_folder(tmp_path / "plain")


@pytest.fixture
def cache_dir(tmp_path):
    return tmp_path / "cache"


def all_sets(splits):
    return (splits.train, splits.val, splits.test)


def assert_masks_match_red(data: SegmentationSet, tolerance=0.1):
    """Mask pixels are the red (pet) pixels of the image, up to resampling at the edges."""
    red = (data.images[..., 0] > 128) & (data.images[..., 2] < 128)
    disagree = (red != data.masks.astype(bool)).mean()
    assert disagree < tolerance


# ---------------------------------------------------------------------------------------
# Oxford-IIIT Pet layout


@pytest.mark.parametrize("size", [32, 64])
def test_oxford_splits_shapes_species_and_masks(oxford, cache_dir, size):
    splits = load_splits(f"oxford-pet:{oxford}", size, cache_dir=cache_dir)

    assert set(splits.test.names) == TEST_NAMES
    trainval = set(splits.train.names) | set(splits.val.names)
    assert trainval == set(CAT_NAMES + DOG_NAMES) - TEST_NAMES
    assert len(splits.val) == round(0.15 * len(trainval))
    assert not set(splits.train.names) & set(splits.val.names)
    assert splits.spec == f"oxford-pet:{oxford.resolve()}"
    for data in all_sets(splits):
        assert data.images.shape == (len(data), size, size, 3)
        assert data.images.dtype == np.uint8 and data.images.flags.c_contiguous
        assert data.masks.shape == (len(data), size, size) and data.masks.dtype == np.uint8
        assert set(np.unique(data.masks)) <= {0, 1}
        for name, species in zip(data.names, data.species.tolist(), strict=True):
            assert SPECIES[species] == ("cat" if name[0].isupper() else "dog")
    everything = [
        (n, i, m) for d in all_sets(splits) for n, i, m in zip(d.names, d.images, d.masks)
    ]
    for name, image, mask in everything:
        if name == ALL_BOUNDARY:
            assert mask.all()  # the boundary band counts as pet
            continue
        assert 0.1 < mask.mean() < 0.5
        if name != GRAYSCALE:
            one = SegmentationSet(image[None], mask[None], np.zeros(1, np.int8), (name,))
            assert_masks_match_red(one)


def test_oxford_odd_files_decode_as_rgb(oxford, cache_dir):
    splits = load_splits(f"oxford-pet:{oxford}", 32, cache_dir=cache_dir)
    by_name = {n: img for d in all_sets(splits) for n, img in zip(d.names, d.images)}
    gray = by_name[GRAYSCALE]
    assert np.array_equal(gray[..., 0], gray[..., 1])  # grayscale expanded to three channels
    assert by_name[PNG_CONTENT][..., 0].max() > 200  # PNG content behind .jpg decoded


def test_trimap_to_mask_counts_boundary_as_pet():
    trimap = np.array([[1, 2, 3]], np.uint8)
    assert trimap_to_mask(trimap).tolist() == [[1, 0, 1]]


# ---------------------------------------------------------------------------------------
# Plain folder


def test_folder_split_and_masks(folder, cache_dir):
    splits = load_splits(f"folder:{folder}", 32, cache_dir=cache_dir)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (6, 2, 2)
    names = sorted(n for d in all_sets(splits) for n in d.names)
    assert names == [f"img{i:02d}" for i in range(10)]
    for data in all_sets(splits):
        assert (data.species == -1).all()
        assert set(np.unique(data.masks)) <= {0, 1}
        assert_masks_match_red(data)


def test_sixteen_bit_pngs(folder, cache_dir):
    image, trimap = scene(48, 40, (4, 4, 20, 20))
    gray16 = (image[..., 0].astype(np.uint16) * 257).astype(np.uint16)
    Image.fromarray(gray16).save(folder / "images" / "img01.png")
    mask16 = trimap_to_mask(trimap).astype(np.uint16) * 1000
    Image.fromarray(mask16).save(folder / "masks" / "img01.png")
    splits = load_splits(f"folder:{folder}", 32, cache_dir=cache_dir)
    (data,) = [d for d in all_sets(splits) if "img01" in d.names]
    i = data.names.index("img01")
    red = data.images[i, ..., 0] > 128
    assert (red == data.masks[i].astype(bool)).mean() > 0.9


def test_split_seed_changes_the_split_not_the_data(folder, cache_dir):
    a = load_splits(f"folder:{folder}", 32, split_seed=0, cache_dir=cache_dir)
    b = load_splits(f"folder:{folder}", 32, split_seed=1, cache_dir=cache_dir)
    # the cache stores rows in split order: another split is another entry
    assert not b.from_cache
    assert load_splits(f"folder:{folder}", 32, split_seed=1, cache_dir=cache_dir).from_cache
    assert a.train.names != b.train.names
    assert a.fingerprint != b.fingerprint
    images = {}
    for data in (*all_sets(a), *all_sets(b)):
        for name, image in zip(data.names, data.images, strict=True):
            assert np.array_equal(images.setdefault(name, image), image)


def test_splits_are_views_of_the_cache_read_a_batch_at_a_time(folder, cache_dir):
    load_splits(f"folder:{folder}", 32, cache_dir=cache_dir)
    splits = load_splits(f"folder:{folder}", 32, cache_dir=cache_dir)
    assert isinstance(splits.train.images, np.memmap)
    images, masks = splits.train.batch(np.array([1, 0]))
    assert images.flags.writeable and not isinstance(images, np.memmap)
    assert np.array_equal(images, splits.train.images[[1, 0]])
    assert np.array_equal(masks, splits.train.masks[[1, 0]])


def test_split_indices_partition():
    train, val, test = split_indices(100, seed=3)
    assert (len(train), len(val), len(test)) == (70, 15, 15)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(100))


# ---------------------------------------------------------------------------------------
# A folder's own split files: splits/{train,val,test}.txt and groups.csv


def stems(*numbers):
    return [f"img{i:02d}" for i in numbers]


def write_list(folder, split, text):
    (folder / "splits").mkdir(exist_ok=True)
    path = folder / "splits" / f"{split}.txt"
    path.write_text(text)
    return path


def write_groups(folder, text):
    path = folder / "groups.csv"
    path.write_text(text)
    return path


def names_of(splits):
    return [set(data.names) for data in all_sets(splits)]


@pytest.fixture
def folder20(tmp_path):
    return write_folder(tmp_path / "plain20", count=20)


def test_split_indices_without_files_are_those_of_before():
    # Fingerprints of existing studies and champions rest on these: they must never move.
    assert [p.tolist() for p in split_indices(12, 0)] == [
        [0, 1, 3, 5, 6, 8, 10, 11], [4, 7], [2, 9],
    ]  # fmt: skip
    official_test = np.full(12, -1, np.int8)
    official_test[[1, 5, 9]] = 2
    assert [p.tolist() for p in split_indices(12, 3, official_test)] == [
        [0, 2, 3, 4, 6, 7, 8, 11], [10], [1, 5, 9],
    ]  # fmt: skip


def test_test_list_is_kept_and_the_rest_drawn_by_seed(folder20, cache_dir):
    write_list(
        folder20,
        "test",
        "# held out by the annotators\n\n  img03.png  \nimg07\r\n# img08\nimg11\nimg15\n",
    )
    splits = [
        load_splits(f"folder:{folder20}", 32, split_seed=seed, cache_dir=cache_dir)
        for seed in (0, 1)
    ]
    for each in splits:
        train, val, test = names_of(each)
        assert test == set(stems(3, 7, 11, 15))
        assert len(val) == round(0.15 * 16) and len(train) == 14
        assert train | val | test == set(stems(*range(20))) and not train & val
        assert_masks_match_red(each.test)
    assert names_of(splits[0])[1] != names_of(splits[1])[1]  # val is drawn by seed
    assert splits[0].fingerprint != splits[1].fingerprint


def test_train_and_val_lists_leave_the_rest_to_test(folder20, cache_dir):
    write_list(folder20, "train", "\n".join(stems(*range(12))))
    write_list(folder20, "val", "\n".join(stems(12, 13, 14)))
    train, val, test = names_of(load_splits(f"folder:{folder20}", 32, cache_dir=cache_dir))
    assert (train, val, test) == (
        set(stems(*range(12))),
        set(stems(12, 13, 14)),
        set(stems(*range(15, 20))),
    )


def test_a_train_list_leaves_the_rest_to_val_and_test(folder20, cache_dir):
    write_list(folder20, "train", "\n".join(stems(*range(10))))
    train, val, test = names_of(load_splits(f"folder:{folder20}", 32, cache_dir=cache_dir))
    assert train == set(stems(*range(10)))
    assert len(val) == len(test) == 5 and val | test == set(stems(*range(10, 20)))


def test_three_lists_leave_unlisted_images_out_unread(folder20, cache_dir):
    write_list(folder20, "train", "\n".join(stems(*range(10))))
    write_list(folder20, "val", "\n".join(stems(10, 11)))
    write_list(folder20, "test", "\n".join(stems(12, 13, 14)))
    (folder20 / "images" / "img17.png").write_bytes(b"not read: in no list")
    splits = load_splits(f"folder:{folder20}", 32, cache_dir=cache_dir)
    assert names_of(splits) == [set(stems(*range(10))), set(stems(10, 11)), set(stems(12, 13, 14))]


def group_of(name):
    return f"video{int(name[3:]) // 4}"  # img00..img03 are video0, and so on


def assert_no_group_across(splits, grouped):
    sides = [{group_of(n) for n in data.names if n in grouped} for data in all_sets(splits)]
    assert not sides[0] & sides[1] and not sides[0] & sides[2] and not sides[1] & sides[2]


def test_groups_never_straddle_a_split(folder20, cache_dir):
    grouped = stems(*range(16))  # img16..img19 have no row: each a group of its own
    rows = "".join(f"{name},{group_of(name)}\n" for name in grouped)
    write_groups(folder20, "stem,group\n" + rows)
    seen_tests = set()
    for seed in range(6):
        splits = load_splits(f"folder:{folder20}", 32, split_seed=seed, cache_dir=cache_dir)
        assert_no_group_across(splits, grouped)
        assert all(len(data) for data in all_sets(splits))
        assert sum(map(len, all_sets(splits))) == 20
        seen_tests.add(splits.test.names)
    assert len(seen_tests) > 1


def test_groups_with_a_test_list_draw_val_by_group(folder20, cache_dir):
    grouped = stems(*range(20))
    write_groups(folder20, "".join(f"{n}, {group_of(n)}\n" for n in grouped))  # no header
    write_list(folder20, "test", "\n".join(stems(16, 17, 18, 19)))  # all of video4
    for seed in range(4):
        splits = load_splits(f"folder:{folder20}", 32, split_seed=seed, cache_dir=cache_dir)
        assert set(splits.test.names) == set(stems(16, 17, 18, 19))
        assert len(splits.val) == 4  # one whole video: 4 is nearest 15% of 16
        assert_no_group_across(splits, grouped)


def test_split_files_are_in_the_fingerprint_and_the_cache_key(folder20, cache_dir):
    spec = f"folder:{folder20}"
    plain = load_splits(spec, 32, cache_dir=cache_dir)
    # One image a group draws exactly the plain split, but is another rule for other seeds.
    groups = write_groups(folder20, "".join(f"{n},{n}\n" for n in stems(*range(20))))
    singletons = load_splits(spec, 32, cache_dir=cache_dir)
    assert names_of(singletons) == names_of(plain)
    assert not singletons.from_cache and singletons.fingerprint != plain.fingerprint
    # Comments and blank lines change the file, not what it says: a new decode, same data.
    groups.write_text("# video frames\n\n" + groups.read_text())
    commented = load_splits(spec, 32, cache_dir=cache_dir)
    assert not commented.from_cache and commented.fingerprint == singletons.fingerprint
    groups.unlink()
    assert load_splits(spec, 32, cache_dir=cache_dir).fingerprint == plain.fingerprint

    test_list = write_list(folder20, "test", "img01\nimg02\nimg03\n")
    listed = load_splits(spec, 32, cache_dir=cache_dir)
    assert not listed.from_cache and listed.fingerprint != plain.fingerprint
    test_list.write_text("img01\nimg02\nimg04\n")
    moved = load_splits(spec, 32, cache_dir=cache_dir)
    assert not moved.from_cache and moved.fingerprint != listed.fingerprint


@pytest.mark.parametrize(
    ("split", "text", "line", "says"),
    [
        ("val", "img01\nimg99\n", 2, "no image 'img99'"),
        ("val", "img01\nimg01.png\n", 2, "listed twice (also line 1)"),  # its file name
        ("val", "img01\nimg02\nimg01\n", 3, "listed twice (also line 1)"),
        ("val", "# nothing yet\n\n", None, "lists no images"),
        ("valid", "img01\n", None, "not a split list"),
    ],
)
def test_bad_split_list(folder20, cache_dir, split, text, line, says):
    path = write_list(folder20, split, text)
    culprit = path if line is None else f"{path}:{line}:"
    assert says in assert_fails_naming(f"folder:{folder20}", culprit, cache_dir)


def test_image_in_two_lists(folder20, cache_dir):
    val = write_list(folder20, "val", "img04\nimg05\n")
    test = write_list(folder20, "test", "img06\nimg05\n")
    message = assert_fails_naming(f"folder:{folder20}", f"{test}:2:", cache_dir)
    assert f"also {val}:2" in message


def test_splits_folder_without_a_list(folder20, cache_dir):
    (folder20 / "splits").mkdir()
    (folder20 / "splits" / "README.md").write_text("lists go here\n")
    message = assert_fails_naming(f"folder:{folder20}", folder20 / "splits", cache_dir)
    assert "train.txt, val.txt, test.txt" in message


def test_lists_that_leave_nothing_to_draw(folder20, cache_dir):
    write_list(folder20, "train", "\n".join(stems(*range(15))))
    write_list(folder20, "val", "\n".join(stems(*range(15, 20))))
    message = assert_fails_naming(f"folder:{folder20}", folder20 / "splits", cache_dir)
    assert "test split" in message and "(0 images)" in message


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("stem,group\nimg01,a\nimg77,a\n", 3, "no image 'img77'"),
        ("img01,a\nimg02\n", 2, "expected 'stem,group'"),
        ("img01,a\nimg02,\n", 2, "expected 'stem,group'"),
        ("img01,a\nimg02,b,c\n", 2, "expected 'stem,group'"),
        ("img01,a\n\nimg01,b\n", 3, "has a row already (line 1)"),
        ("stem,group\n", None, "no 'stem,group' rows"),
    ],
)
def test_bad_groups_file(folder20, cache_dir, text, line, says):
    path = write_groups(folder20, text)
    culprit = path if line is None else f"{path}:{line}:"
    assert says in assert_fails_naming(f"folder:{folder20}", culprit, cache_dir)


def test_group_cut_by_the_lists(folder20, cache_dir):
    groups = write_groups(folder20, "img01,p1\nimg02,p1\nimg03,p2\nimg04,p2\n")
    write_list(folder20, "test", "img01\nimg03\nimg04\n")
    message = assert_fails_naming(f"folder:{folder20}", groups, cache_dir)
    assert "'p1'" in message and "img01 is in splits/test.txt but img02 is in no list" in message
    write_list(folder20, "train", "img02\n")
    message = assert_fails_naming(f"folder:{folder20}", groups, cache_dir)
    assert "but img02 is in splits/train.txt" in message


def test_too_few_groups(folder20, cache_dir):
    groups = write_groups(folder20, "".join(f"{n},{n < 'img10'}\n" for n in stems(*range(20))))
    message = assert_fails_naming(f"folder:{folder20}", groups, cache_dir)
    assert "(20 images in 2 groups)" in message


def test_bad_split_file_is_one_line_from_the_command(folder20, tmp_path, capsys):
    from harness.cli import run_main
    from harness.train import main

    val = write_list(folder20, "val", "img01\nimg99\n")
    argv = ["--data", f"folder:{folder20}", "--tracking-uri", f"sqlite:///{tmp_path}/mlflow.db"]
    assert run_main(main, argv) != 0
    err = capsys.readouterr().err
    assert err.strip() == f"error: {val}:2: no image 'img99' in {folder20 / 'images'}"


# ---------------------------------------------------------------------------------------
# Cache


def test_second_load_comes_from_cache(oxford, cache_dir):
    first = load_splits(f"oxford-pet:{oxford}", 32, cache_dir=cache_dir)
    second = load_splits(f"oxford-pet:{oxford}", 32, cache_dir=cache_dir)
    assert not first.from_cache and second.from_cache
    assert first.fingerprint == second.fingerprint
    for a, b in zip(all_sets(first), all_sets(second), strict=True):
        assert a.names == b.names
        assert np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.species, b.species)
    other_size = load_splits(f"oxford-pet:{oxford}", 16, cache_dir=cache_dir)
    assert not other_size.from_cache and other_size.fingerprint != first.fingerprint


def test_changed_file_list_misses_the_cache(folder, cache_dir):
    spec = f"folder:{folder}"
    base = load_splits(spec, 32, cache_dir=cache_dir)

    touched = folder / "images" / "img03.png"
    stat = touched.stat()
    os.utime(touched, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert not load_splits(spec, 32, cache_dir=cache_dir).from_cache
    assert load_splits(spec, 32, cache_dir=cache_dir).from_cache

    shutil.copy(folder / "images" / "img00.jpg", folder / "images" / "extra.jpg")
    shutil.copy(folder / "masks" / "img00.png", folder / "masks" / "extra.png")
    added = load_splits(spec, 32, cache_dir=cache_dir)
    assert not added.from_cache and added.fingerprint != base.fingerprint

    for path in (folder / "images" / "extra.jpg", folder / "masks" / "extra.png"):
        path.unlink()
    removed = load_splits(spec, 32, cache_dir=cache_dir)
    assert removed.from_cache  # back to the original file list
    (folder / "images" / "img09.png").unlink()
    (folder / "masks" / "img09.png").unlink()
    assert not load_splits(spec, 32, cache_dir=cache_dir).from_cache


def test_changed_oxford_list_misses_the_cache(oxford, cache_dir):
    spec = f"oxford-pet:{oxford}"
    load_splits(spec, 32, cache_dir=cache_dir)
    test_list = oxford / "annotations" / "test.txt"
    test_list.write_text("".join(test_list.read_text().splitlines(keepends=True)[:-1]))
    assert not load_splits(spec, 32, cache_dir=cache_dir).from_cache


def test_fingerprint_depends_on_content_not_location(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    a = load_splits(f"folder:{folder}", 32, cache_dir=tmp_path / "c1")
    b = load_splits(f"folder:{copy}", 32, cache_dir=tmp_path / "c2")
    assert a.fingerprint == b.fingerprint and len(a.fingerprint) == 16
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(copy / "images" / "img04.jpg")
    c = load_splits(f"folder:{copy}", 32, cache_dir=tmp_path / "c2")
    assert c.fingerprint != a.fingerprint


def test_unwritable_cache_only_warns(folder, tmp_path):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not write data cache"):
        splits = load_splits(f"folder:{folder}", 32, cache_dir=blocker)
    assert not splits.from_cache and len(splits.train) == 6


def test_damaged_cache_entry_is_rebuilt(folder, cache_dir):
    first = np.array(load_splits(f"folder:{folder}", 32, cache_dir=cache_dir).train.images)
    (entry,) = cache_dir.iterdir()
    # writing over a mapped file in place would pull the pages from under `first`'s mapping
    (entry / "images.npy").unlink()
    (entry / "images.npy").write_bytes(b"garbage")
    with pytest.warns(UserWarning, match="damaged"):
        again = load_splits(f"folder:{folder}", 32, cache_dir=cache_dir)
    assert not again.from_cache
    assert np.array_equal(again.train.images, first)
    assert load_splits(f"folder:{folder}", 32, cache_dir=cache_dir).from_cache


def test_cache_dir_defaults_to_environment(folder, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE_DIR", str(tmp_path / "env-cache"))
    load_splits(f"folder:{folder}", 32)
    assert any((tmp_path / "env-cache").iterdir())


# ---------------------------------------------------------------------------------------
# Bad data: one line naming the culprit, nothing cached


def assert_fails_naming(spec, culprit, cache_dir, size=32):
    with pytest.raises(DataError) as error:
        load_splits(spec, size, cache_dir=cache_dir)
    message = str(error.value)
    assert "\n" not in message
    assert str(culprit) in message
    assert not cache_dir.exists() or not any(cache_dir.iterdir())
    return message


def test_missing_folder(tmp_path, cache_dir):
    missing = tmp_path / "nowhere"
    assert_fails_naming(f"folder:{missing}", missing, cache_dir)
    assert_fails_naming(f"oxford-pet:{missing}", missing, cache_dir)


def test_corrupt_image_is_named_and_nothing_cached(oxford, cache_dir):
    bad = oxford / "images" / "beagle_3.jpg"
    bad.write_bytes(b"this is not a jpeg at all")
    assert_fails_naming(f"oxford-pet:{oxford}", bad, cache_dir)


def test_empty_image_file(folder, cache_dir):
    bad = folder / "images" / "img02.jpg"
    bad.write_bytes(b"")
    assert_fails_naming(f"folder:{folder}", bad, cache_dir)


def test_missing_mask(folder, oxford, cache_dir):
    (folder / "masks" / "img05.png").unlink()
    assert_fails_naming(f"folder:{folder}", "img05", cache_dir)
    trimap = oxford / "annotations" / "trimaps" / "pug_2.png"
    trimap.unlink()
    assert_fails_naming(f"oxford-pet:{oxford}", trimap, cache_dir)


def test_missing_oxford_image_and_list(oxford, cache_dir):
    image = oxford / "images" / "Bengal_2.jpg"
    image.unlink()
    assert_fails_naming(f"oxford-pet:{oxford}", image, cache_dir)
    test_list = oxford / "annotations" / "test.txt"
    test_list.unlink()
    assert_fails_naming(f"oxford-pet:{oxford}", test_list, cache_dir)


def test_malformed_oxford_list(oxford, cache_dir):
    trainval = oxford / "annotations" / "trainval.txt"
    trainval.write_text(trainval.read_text() + "pug_9 12 dog\n")
    assert_fails_naming(f"oxford-pet:{oxford}", trainval, cache_dir)


def test_mask_of_another_size(folder, cache_dir):
    mask = folder / "masks" / "img07.png"
    Image.fromarray(np.zeros((20, 20), np.uint8)).save(mask)
    message = assert_fails_naming(f"folder:{folder}", mask, cache_dir)
    assert "20x20" in message and "48x40" in message


def test_trimap_with_foreign_values(oxford, cache_dir):
    trimap = oxford / "annotations" / "trimaps" / "beagle_2.png"
    width, height = Image.open(oxford / "images" / "beagle_2.jpg").size
    Image.fromarray(np.full((height, width), 255, np.uint8)).save(trimap)
    message = assert_fails_naming(f"oxford-pet:{oxford}", trimap, cache_dir)
    assert "not a trimap" in message


def test_too_few_images(tmp_path, cache_dir):
    tiny = write_folder(tmp_path / "tiny", count=2)
    assert_fails_naming(f"folder:{tiny}", tiny, cache_dir)


@pytest.mark.parametrize(
    "spec", ["", "pets", "oxford-pet", "folder:", "synthetic:many", "synthetic:2"]
)
def test_bad_spec(spec, cache_dir):
    assert_fails_naming(spec, repr(spec), cache_dir)


@pytest.mark.parametrize("size", [0, 8, 20, 63, 64.0, True])
def test_bad_image_size(size, cache_dir):
    assert_fails_naming("synthetic:30", size, cache_dir, size=size)


def test_numpy_integer_image_size_is_accepted(cache_dir):
    splits = load_splits("synthetic:20", np.int64(32), cache_dir=cache_dir)
    assert splits.image_size == 32 and type(splits.image_size) is int


def test_spec_normalisation(tmp_path):
    assert str(parse_spec(DEFAULT_SPEC)) == "synthetic:1000"
    assert str(parse_spec("synthetic:240")) == "synthetic:240"
    assert str(parse_spec(f"folder:{tmp_path}/a/../b")) == f"folder:{tmp_path.resolve()}/b"


# ---------------------------------------------------------------------------------------
# Synthetic data


def test_synthetic_is_deterministic_and_prefix_stable():
    images, masks, species = generate(60, 32)
    again = generate(60, 32)
    prefix = generate(25, 32)
    for a, b, p in zip((images, masks, species), again, prefix, strict=True):
        assert np.array_equal(a, b)
        assert np.array_equal(a[:25], p)
    assert not np.array_equal(generate(60, 32, seed=1)[0], images)


def test_synthetic_load_splits(cache_dir):
    splits = load_splits("synthetic:40", 32, cache_dir=cache_dir)
    assert splits.spec == "synthetic:40"
    assert (len(splits.train), len(splits.val), len(splits.test)) == (28, 6, 6)
    assert splits.train.names[0].startswith("synthetic-0000")
    again = load_splits("synthetic:40", 32, cache_dir=cache_dir)
    assert again.from_cache and again.fingerprint == splits.fingerprint
    assert np.array_equal(again.train.images, splits.train.images)
    assert load_splits("synthetic:41", 32, cache_dir=cache_dir).fingerprint != splits.fingerprint


@pytest.fixture(scope="module")
def synthetic_sample():
    return generate_trimaps(300, 64)


def test_synthetic_labels_are_sensible(synthetic_sample):
    images, trimaps, species = synthetic_sample
    assert images.shape == (300, 64, 64, 3) and images.dtype == np.uint8
    assert set(np.unique(trimaps)) == {1, 2, 3}
    assert 0.3 < species.mean() < 0.7  # both species, roughly balanced
    masks = trimap_to_mask(trimaps)
    fraction = masks.mean(axis=(1, 2))
    assert 0.15 < fraction.mean() < 0.45
    assert fraction.min() > 0.01 and fraction.max() < 0.9  # never empty, never all pet
    boundary = (trimaps == 3).mean()
    assert 0.01 < boundary < 0.1


def test_synthetic_is_not_solved_by_a_colour_threshold(synthetic_sample):
    """The best per-channel threshold must be far from the 0.8 a small UNet reaches."""
    images, trimaps, _ = synthetic_sample
    pet = trimap_to_mask(trimaps).astype(bool)
    best = 0.0
    channels = [images[..., c] for c in range(3)] + [images.mean(axis=-1).astype(np.uint8)]
    for channel in channels:
        pet_hist = np.bincount(channel[pet], minlength=256).astype(float)
        bg_hist = np.bincount(channel[~pet], minlength=256).astype(float)
        # Predict pet above threshold t (and, flipped, below it), for every t at once.
        tp = pet_hist.sum() - np.cumsum(pet_hist)
        fp = bg_hist.sum() - np.cumsum(bg_hist)
        for tp_, fp_ in ((tp, fp), (pet_hist.sum() - tp, bg_hist.sum() - fp)):
            fn, tn = pet_hist.sum() - tp_, bg_hist.sum() - fp_
            mean_iou = 0.5 * (tp_ / (tp_ + fp_ + fn) + tn / (tn + fn + fp_))
            best = max(best, float(mean_iou.max()))
    assert best < 0.65


def test_synthetic_species_differ_in_shape_not_colour(synthetic_sample):
    images, trimaps, species = synthetic_sample
    pet = trimap_to_mask(trimaps).astype(bool)
    mean_colour = [images[pet & (species[:, None, None] == s)].mean(axis=0) for s in (0, 1)]
    assert np.abs(mean_colour[0] - mean_colour[1]).max() < 20


def test_synthetic_scene_is_the_same_at_any_size():
    _, small, _ = generate(6, 64)
    _, large, _ = generate(6, 256)
    # Downsample the large masks by majority over 4x4 blocks; it must match the small ones.
    pooled = large.reshape(6, 64, 4, 64, 4).mean(axis=(2, 4)) >= 0.5
    agreement = (pooled == small.astype(bool)).mean()
    assert agreement > 0.97


def test_subset_copies_selected_samples(synthetic_sample):
    images, trimaps, species = synthetic_sample
    data = SegmentationSet(
        images[:10], trimap_to_mask(trimaps[:10]), species[:10], tuple("abcdefghij")
    )
    part = data.subset([7, 2])
    assert part.names == ("h", "c") and len(part) == 2
    assert np.array_equal(part.images[0], images[7]) and part.images.flags.c_contiguous
    assert data.subset(np.arange(10) < 3).names == ("a", "b", "c")
