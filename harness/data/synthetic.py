"""The generated default dataset: cartoon cats and dogs on cluttered backgrounds.

It stands in for Oxford-IIIT Pet when no data is at hand, so it has to be a real learning
problem: backgrounds are textured and striped, in a palette that includes the fur colours,
and carry distractor blobs with the same fur textures as the animals, so no colour
threshold separates pet from background (tests check this); the silhouette does. Cats and dogs differ in shape (cats: pointed upright
ears, short muzzle, long thin tail; dogs: floppy ears, long muzzle, thicker tail, longer
legs), never in colour.

Every scene is described in normalised coordinates by a handful of numbers drawn from a
generator seeded with (seed, index) alone, and rasterised at the requested size: image i is
the same whatever the count, and the same picture at 64 or 256 pixels. Shapes are unions of
tapered capsules, evaluated as signed distances, which gives antialiased edges and the
trimap's boundary band for free. Rasterising is vectorised over a chunk of images at once.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from harness.data.sources import TRIMAP_BACKGROUND, TRIMAP_BOUNDARY, TRIMAP_PET, trimap_to_mask

# Bump whenever a change alters any generated pixel: it keys the cache and the fingerprint.
GENERATOR_VERSION = 1
DEFAULT_SEED = 0

# Pixels per rendering chunk: float32 work arrays of this size stay in the CPU cache.
_CHUNK_PIXELS = 1 << 17

_FUR = np.array(
    [
        (0.09, 0.08, 0.08),  # black
        (0.93, 0.91, 0.87),  # white
        (0.86, 0.52, 0.22),  # ginger
        (0.93, 0.83, 0.63),  # cream
        (0.46, 0.29, 0.16),  # brown
        (0.56, 0.56, 0.58),  # grey
        (0.80, 0.63, 0.32),  # golden
        (0.27, 0.17, 0.11),  # dark brown
    ],
    dtype=np.float32,
)
_SCENERY = np.array(
    [
        (0.32, 0.46, 0.21),  # grass
        (0.20, 0.30, 0.16),  # dark foliage
        (0.55, 0.62, 0.70),  # blue-grey wall
        (0.70, 0.66, 0.58),  # beige
        (0.55, 0.20, 0.18),  # red carpet
        (0.38, 0.33, 0.30),  # wooden floor
        (0.25, 0.30, 0.45),  # navy fabric
        (0.80, 0.78, 0.74),  # light wall
    ],
    dtype=np.float32,
)
_PALETTE = np.concatenate([_FUR, _SCENERY])

# Value-noise grid sizes (cells across the image): low, mid, fine, finer.
_NOISE_CELLS = (3, 7, 20, 40)
# Distractors drawn behind the animal; one more slot is an occluder in front of it.
_BEHIND = 3
_CAT, _DOG = 0, 1


def generate(
    count: int, image_size: int, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images uint8 (N,S,S,3), masks uint8 (N,S,S) 0/1, species int8 (N,))."""
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    masks = np.empty((count, image_size, image_size), dtype=np.uint8)
    species = np.empty(count, dtype=np.int8)
    for start, chunk_images, trimaps, chunk_species in _chunks(count, image_size, seed):
        stop = start + len(chunk_images)
        images[start:stop] = chunk_images
        trimap_to_mask(trimaps, out=masks[start:stop])
        species[start:stop] = chunk_species
    return images, masks, species


def generate_trimaps(
    count: int, image_size: int, seed: int = DEFAULT_SEED
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Like `generate` but with the Oxford trimaps (1 pet, 2 background, 3 boundary)."""
    images = np.empty((count, image_size, image_size, 3), dtype=np.uint8)
    trimaps = np.empty((count, image_size, image_size), dtype=np.uint8)
    species = np.empty(count, dtype=np.int8)
    for start, chunk_images, chunk_trimaps, chunk_species in _chunks(count, image_size, seed):
        stop = start + len(chunk_images)
        images[start:stop] = chunk_images
        trimaps[start:stop] = chunk_trimaps
        species[start:stop] = chunk_species
    return images, trimaps, species


def _chunks(
    count: int, size: int, seed: int
) -> Iterator[tuple[int, np.ndarray, np.ndarray, np.ndarray]]:
    per_chunk = max(1, _CHUNK_PIXELS // (size * size))
    for start in range(0, count, per_chunk):
        scenes = [
            _draw_scene(np.random.default_rng([seed, i]))
            for i in range(start, min(count, start + per_chunk))
        ]
        params = {name: _stack([scene[name] for scene in scenes]) for name in scenes[0]}
        images, trimaps = _render(params, size)
        yield start, images, trimaps, params["species"].astype(np.int8)


def _stack(values: list) -> np.ndarray:
    stacked = np.stack(values)
    # float64 would double the cost of every rasterising step.
    return stacked.astype(np.float32) if stacked.dtype.kind == "f" else stacked


# ---------------------------------------------------------------------------------------
# Scene description: plain numbers, drawn per image.


def _colours(rng: np.random.Generator, palette: np.ndarray, count: int) -> np.ndarray:
    """(count, 3) palette colours, each a little brighter or darker and tinted."""
    base = palette[rng.integers(len(palette), size=count)]
    shade = rng.uniform(0.8, 1.15, (count, 1))
    return np.clip(base * shade + rng.uniform(-0.07, 0.07, (count, 3)), 0.0, 1.0)


def _capsule(
    a: tuple[float, float], angle: float, length: float, ra: float, rb: float
) -> list[float]:
    """A tapered capsule from point a, along angle, radius ra at a and rb at the other end."""
    return [a[0], a[1], a[0] + length * np.cos(angle), a[1] + length * np.sin(angle), ra, rb]


def _animal_parts(rng: np.random.Generator, species: int) -> np.ndarray:
    """(11, 6) capsules in the animal's frame: +x forward, +y down, body half-length 1."""
    cat = species == _CAT
    u = rng.uniform
    body_h = u(0.40, 0.58)
    parts = [
        [-1 + body_h, u(-0.05, 0.05), 1 - body_h, u(-0.05, 0.05), body_h, body_h * u(0.85, 1.0)]
    ]

    head_r = u(0.36, 0.44) if cat else u(0.33, 0.42)
    head = (u(0.88, 1.05), -u(0.35, 0.7))
    tilt = u(-0.35, 0.45)  # head pitch: + looks down
    parts.append([head[0], head[1], head[0], head[1], head_r, head_r])
    if cat:  # short muzzle
        parts.append(_capsule(head, tilt + 0.25, head_r * u(0.75, 1.0), head_r * 0.6, 0.11))
    else:  # long muzzle
        parts.append(_capsule(head, tilt + 0.2, head_r * u(1.4, 1.9), head_r * 0.55, u(0.12, 0.16)))

    for side in (-0.45, 0.2):  # one ear towards the back, one towards the front
        top = -np.pi / 2 + tilt + side
        base = (head[0] + 0.7 * head_r * np.cos(top), head[1] + 0.7 * head_r * np.sin(top))
        if cat:  # pointed, upright
            parts.append(_capsule(base, top + u(-0.15, 0.15), u(0.38, 0.5), u(0.15, 0.18), 0.01))
        else:  # floppy: hangs down the side of the head
            hang = np.pi / 2 + tilt + u(0.2, 0.7)
            parts.append(_capsule(base, hang, u(0.45, 0.65), u(0.07, 0.1), u(0.15, 0.19)))

    leg_len = u(0.5, 0.7) if cat else u(0.65, 0.9)
    for x in (-0.75, -0.52, 0.5, 0.73):
        start = (x + u(-0.06, 0.06), body_h * 0.3)
        swing = np.pi / 2 + u(-0.35, 0.35)
        parts.append(_capsule(start, swing, body_h * 0.7 + leg_len, u(0.13, 0.16), u(0.09, 0.12)))

    root = (-0.9, -0.15)
    if cat:  # long, thin, curling up
        first = np.pi + u(0.3, 1.0)
        second = first + u(0.3, 0.9)
        parts.append(_capsule(root, first, u(0.55, 0.75), 0.09, 0.075))
        bend = (parts[-1][2], parts[-1][3])
        parts.append(_capsule(bend, second, u(0.35, 0.55), 0.075, 0.06))
    else:  # short and thick
        first = np.pi + u(-0.3, 0.9)
        parts.append(_capsule(root, first, u(0.4, 0.6), u(0.1, 0.12), 0.07))
        bend = (parts[-1][2], parts[-1][3])
        parts.append(_capsule(bend, first + u(-0.3, 0.3), u(0.0, 0.2), 0.07, 0.06))
    return np.asarray(parts, dtype=np.float32)


def _fur_pattern(rng: np.random.Generator) -> np.ndarray:
    """Weights of stripes, patches and two-tone (at most one nonzero), stripe frequency."""
    weights = np.zeros(4)
    kind, strength = rng.integers(4), rng.uniform(0.5, 1.0)
    if kind < 3:  # the fourth kind is plain fur
        weights[kind] = strength
    weights[3] = rng.uniform(7, 14)
    return weights


def _draw_scene(rng: np.random.Generator) -> dict[str, np.ndarray]:
    u = rng.uniform
    species = int(rng.integers(2))
    scene: dict[str, np.ndarray] = {"species": np.int8(species)}

    # Background: two-colour gradient, stripes, patches and fine texture.
    scene["bg_a"], scene["bg_b"], scene["bg_patch"], scene["bg_stripe"] = _colours(rng, _PALETTE, 4)
    scene["bg_numbers"] = np.array(
        [
            u(0.0, 0.8) * (rng.random() < 0.6),  # stripe strength
            u(3, 18),  # stripe frequency
            u(0, np.pi),  # stripe angle
            u(0, 1),  # stripe phase
            u(0.0, 0.8),  # patch strength
            u(0.05, 0.25),  # fine texture strength
        ],
        dtype=np.float32,
    )
    scene["noise"] = np.concatenate(
        [rng.standard_normal((n + 1) ** 2) for n in _NOISE_CELLS]
    ).astype(np.float32)

    # The animal: pose in the image, then its shape in its own frame.
    scale = u(0.22, 0.34) if rng.random() < 0.8 else u(0.34, 0.46)  # sometimes a close-up
    angle = rng.normal(0, 0.3) if rng.random() < 0.85 else u(-1.3, 1.3)
    facing = 1.0 if rng.random() < 0.5 else -1.0
    near_border = rng.random() < 0.25
    cx, cy = u(0.05, 0.95, 2) if near_border else u(0.3, 0.7, 2)
    scene["pose"] = np.array([cx, cy, scale, angle, facing], dtype=np.float32)
    scene["parts"] = _animal_parts(rng, species)
    scene["animal_pattern"] = _fur_pattern(rng)
    scene["animal_colours"] = _colours(rng, _FUR, 2)

    # Distractors: fur-coloured, fur-textured capsules. The last slot sits in front of the
    # animal and covers part of it.
    slots = _BEHIND + 1
    centres = u(0, 1, (slots, 2))
    radii = u(0.03, 0.2, (slots, 2))
    present = rng.random(slots) < 0.6
    centres[-1] = (cx, cy) + u(-0.2, 0.2, 2)
    radii[-1] = u(0.05, 0.12, 2)
    present[-1] = rng.random() < 0.2
    radii[~present] = -1.0  # a negative radius draws nothing, keeping every slot vectorised
    theta = u(0, 2 * np.pi, slots)
    half = 0.5 * u(0.0, 0.35, slots)
    direction = np.stack([np.cos(theta), np.sin(theta)], axis=1)
    scene["distractors"] = np.concatenate(
        [centres - half[:, None] * direction, centres + half[:, None] * direction, radii], axis=1
    )
    # Distractors share one fur pattern (rasterising a texture per slot would double the
    # cost of the whole generator) but each has its own colours.
    scene["distractor_pattern"] = _fur_pattern(rng)
    scene["distractor_colours"] = _colours(rng, _PALETTE, 2 * slots).reshape(slots, 2, 3)
    scene["distractor_angle"] = u(0, np.pi)

    scene["light"] = np.concatenate([[u(0.75, 1.2)], u(0.9, 1.1, 3)]).astype(np.float32)
    return scene


# ---------------------------------------------------------------------------------------
# Rasterising: everything below works on whole chunks, (B, S, S) float32. Colour images are
# channel-first, (B, 3, S, S), so that numpy's inner loops run along rows, not over 3 values.


def _rgb(colours: np.ndarray) -> np.ndarray:
    """(B, 3) colours -> (B, 3, 1, 1), to broadcast against (B, 3, S, S) images."""
    return colours[:, :, None, None]


def _interp_matrix(cells: int, size: int) -> np.ndarray:
    """(size, cells + 1) weights that smoothly interpolate a value-noise grid to pixels."""
    pos = (np.arange(size, dtype=np.float32) + 0.5) / size * cells
    left = np.minimum(pos.astype(np.int64), cells - 1)
    t = pos - left
    t = t * t * (3 - 2 * t)  # smoothstep: no visible grid lines
    weights = np.zeros((size, cells + 1), dtype=np.float32)
    weights[np.arange(size), left] = 1 - t
    weights[np.arange(size), left + 1] = t
    return weights


def _noise_fields(noise: np.ndarray, size: int) -> list[np.ndarray]:
    """One (B, S, S) field per grid size in _NOISE_CELLS, roughly in [-1.5, 1.5]."""
    fields, offset = [], 0
    for cells in _NOISE_CELLS:
        n = cells + 1
        grid = noise[:, offset : offset + n * n].reshape(-1, n, n)
        offset += n * n
        w = _interp_matrix(cells, size)
        fields.append(w @ grid @ w.T)
    return fields


def _capsule_sdf(x: np.ndarray, y: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Signed distance (approximate near tapered ends) to capsules c (B, 6), broadcast."""
    ax, ay, bx, by, ra, rb = (c[:, k, None, None] for k in range(6))
    dx, dy = bx - ax, by - ay
    inv_len2 = 1.0 / np.maximum(dx * dx + dy * dy, 1e-8)
    px, py = x - ax, y - ay
    h = np.clip((px * dx + py * dy) * inv_len2, 0.0, 1.0)
    qx = px - dx * h
    qy = py - dy * h
    return np.sqrt(qx * qx + qy * qy) - (ra + (rb - ra) * h)


def _fur_texture(
    x: np.ndarray, y: np.ndarray, mid: np.ndarray, fine: np.ndarray, pattern: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(mix, grain): where the second colour shows, and brightness of the fur's grain.

    x, y are an object's own frame (x along it); pattern as drawn by _fur_pattern.
    """
    w = pattern[:, :, None, None]
    mix = w[:, 0] * (0.5 + 0.5 * np.sin(w[:, 3] * x + 2.0 * fine))  # tabby stripes
    mix += w[:, 1] * np.clip(mid * 3.0, 0.0, 1.0)  # patches
    mix += w[:, 2] * np.clip(y * 6.0, 0.0, 1.0)  # two-tone: lighter belly or back
    # Fur streaks run along the object; fine noise roughens them.
    grain = 1.0 + 0.12 * fine + 0.08 * np.sin(45.0 * y + 4.0 * fine)
    return mix, grain


def _fur_colour(mix: np.ndarray, grain: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """(B, 3, S, S) fur from a texture and (B, 2, 3) base and second colours."""
    base, second = _rgb(colours[:, 0]), _rgb(colours[:, 1])
    colour = (second - base) * mix[:, None]
    colour += base  # in place: numpy 2.4 is much slower on `base + temporary` here
    colour *= grain[:, None]
    return colour


def _paint(image: np.ndarray, colour: np.ndarray, sdf_px: np.ndarray) -> None:
    """Composite colour where the shape is, with a one-pixel antialiased edge."""
    alpha = np.clip(0.5 - sdf_px, 0.0, 1.0)[:, None]
    image += (colour - image) * alpha


def _frame(u: np.ndarray, v: np.ndarray, cx, cy, angle, scale, facing):
    """Image coordinates -> an object's frame (rotated, scaled, optionally mirrored)."""
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    du, dv = u - cx[:, None, None], v - cy[:, None, None]
    inv = 1.0 / scale[:, None, None]
    x = (du * cos + dv * sin) * inv * facing[:, None, None]
    y = (dv * cos - du * sin) * inv
    return x, y


def _render(p: dict[str, np.ndarray], size: int) -> tuple[np.ndarray, np.ndarray]:
    count = len(p["species"])
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    u, v = coords[None, None, :], coords[None, :, None]
    low, mid, fine, finer = _noise_fields(p["noise"], size)
    fine = fine + 0.6 * finer
    numbers = p["bg_numbers"].T[:, :, None, None]
    stripe_amp, stripe_freq, stripe_angle, stripe_phase, patch_amp, texture = numbers

    # Background.
    mix = np.clip(0.5 + 0.6 * low, 0.0, 1.0)[:, None]
    bg_a, bg_b = _rgb(p["bg_a"]), _rgb(p["bg_b"])
    image = (bg_b - bg_a) * mix
    image += bg_a
    along = u * np.cos(stripe_angle) + v * np.sin(stripe_angle)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (stripe_freq * along + stripe_phase) + 1.5 * low)
    image += (_rgb(p["bg_stripe"]) - image) * (stripe_amp * stripes)[:, None]
    patches = np.clip((mid - 0.3) * 3.0, 0.0, 1.0)
    image += (_rgb(p["bg_patch"]) - image) * (patch_amp * patches)[:, None]
    image *= (1.0 + texture * fine)[:, None]

    px = np.float32(size)  # normalised distance -> pixels
    ones = np.ones(count, dtype=np.float32)
    x, y = _frame(u, v, 0.5 * ones, 0.5 * ones, p["distractor_angle"], 0.25 * ones, ones)
    clutter_mix, clutter_grain = _fur_texture(x, y, mid, fine, p["distractor_pattern"])

    def distractor(slot: int) -> np.ndarray:
        sdf = _capsule_sdf(u, v, p["distractors"][:, slot]) * px
        colour = _fur_colour(clutter_mix, clutter_grain, p["distractor_colours"][:, slot])
        _paint(image, colour, sdf)
        return sdf

    for slot in range(_BEHIND):
        distractor(slot)

    # The animal: union of its capsules in its own frame.
    cx, cy, scale, angle, facing = p["pose"].T
    x, y = _frame(u, v, cx, cy, angle, scale, facing)
    parts = p["parts"]
    sdf = _capsule_sdf(x, y, parts[:, 0])
    for k in range(1, parts.shape[1]):
        np.minimum(sdf, _capsule_sdf(x, y, parts[:, k]), out=sdf)
    mix, grain = _fur_texture(x, y, mid, fine, p["animal_pattern"])
    grain *= 0.8 + 0.2 * np.clip(-sdf * 4.0, 0.0, 1.0)  # rounded shading
    colour = _fur_colour(mix, grain, p["animal_colours"])
    sdf *= scale[:, None, None] * px
    _paint(image, colour, sdf)

    # The occluder in front cuts the visible pet: visible = animal and not occluder.
    np.maximum(sdf, -distractor(_BEHIND), out=sdf)

    light = p["light"]
    image *= _rgb(light[:, :1] * light[:, 1:])
    np.clip(image, 0.0, 1.0, out=image)
    image = (image.transpose(0, 2, 3, 1) * 255.0 + 0.5).astype(np.uint8)

    # Oxford trimap: a boundary band about a pixel wide (wider at large sizes) around the edge.
    band = max(0.5, 0.004 * size)
    trimap = np.full(sdf.shape, TRIMAP_BACKGROUND, dtype=np.uint8)
    trimap[sdf < -band] = TRIMAP_PET
    trimap[np.abs(sdf) <= band] = TRIMAP_BOUNDARY
    return image, trimap
