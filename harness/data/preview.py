"""Write a grid of synthetic samples: `python -m harness.data.preview OUT.png`.

Each sample is shown twice: the image as the network sees it, and the same image with the
pet tinted red and the trimap's boundary band in yellow, labelled with the species.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness.data.dataset import SPECIES
from harness.data.sources import TRIMAP_BOUNDARY, TRIMAP_PET
from harness.data.synthetic import generate_trimaps

_PET_TINT = np.array([230, 40, 40], dtype=np.float32)
_BOUNDARY = np.array([255, 230, 0], dtype=np.uint8)
_CAPTION = 14  # pixels of caption strip under each pair


def overlay(image: np.ndarray, trimap: np.ndarray) -> np.ndarray:
    out = image.astype(np.float32)
    pet = trimap == TRIMAP_PET
    out[pet] = 0.45 * out[pet] + 0.55 * _PET_TINT
    out = out.astype(np.uint8)
    out[trimap == TRIMAP_BOUNDARY] = _BOUNDARY
    return out


def sample_grid(
    count: int = 16, image_size: int = 64, columns: int = 4, zoom: int = 3
) -> Image.Image:
    images, trimaps, species = generate_trimaps(count, image_size)
    cell_w, cell_h = 2 * image_size * zoom, image_size * zoom + _CAPTION
    rows = -(-count // columns)
    grid = Image.new("RGB", (columns * (cell_w + 4), rows * (cell_h + 4)), "white")
    draw = ImageDraw.Draw(grid)
    for i in range(count):
        pair = np.concatenate([images[i], overlay(images[i], trimaps[i])], axis=1)
        tile = Image.fromarray(pair).resize((cell_w, image_size * zoom), Image.Resampling.NEAREST)
        x, y = (i % columns) * (cell_w + 4), (i // columns) * (cell_h + 4)
        grid.paste(tile, (x, y))
        draw.text((x + 2, y + image_size * zoom + 1), f"#{i} {SPECIES[species[i]]}", fill="black")
    return grid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="PNG file to write")
    parser.add_argument("--count", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--zoom", type=int, default=3, help="pixels per image pixel")
    args = parser.parse_args(argv)
    grid = sample_grid(args.count, args.image_size, args.columns, args.zoom)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    grid.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
