"""Data layer: Oxford-IIIT Pet layout, plain folders, the decode cache, the generator."""

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
