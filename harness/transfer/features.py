"""Encoder features of images: the frozen UNet's deepest levels, pooled over the whole image,
over the predicted foreground and background, or in a grid over the foreground's box."""

import numpy as np
import torch
from torchvision.ops import roi_align

from harness.errors import HarnessError
from harness.models import UNet
from harness.trainer import inference_batches, to_input

FEATURE_PARTS = ("pooled", "masked", "grid")
DEFAULT_FEATURES = "masked+grid"
DEFAULT_LEVELS = 2
GRID = 3  # cells across the pet's box


def parse_features(text: str) -> tuple[str, ...]:
    """ "masked+grid" -> ("masked", "grid"); unknown parts are the user's error."""
    parts = tuple(part.strip() for part in text.split("+"))
    unknown = [part for part in parts if part not in FEATURE_PARTS]
    if unknown or not parts:
        raise HarnessError(
            f"unknown features {text!r}: combine {', '.join(FEATURE_PARTS)} with +, e.g. {DEFAULT_FEATURES}"
        )
    return parts


def encoder_features(
    model: UNet, images: np.ndarray, device: torch.device, parts: tuple[str, ...], levels: int
) -> np.ndarray:
    """float32 (N, F) features of uint8 (N, H, W, 3) images from the deepest `levels` levels,
    averaged over each image and its mirror image: a pet faces left or right by chance (this
    averaging was worth 1 to 3 points of balanced accuracy on the generated data)."""
    mirrored = images[:, :, ::-1]
    return (
        _features(model, images, device, parts, levels)
        + _features(model, mirrored, device, parts, levels)
    ) / 2


@torch.inference_mode()
def _features(
    model: UNet, images: np.ndarray, device: torch.device, parts: tuple[str, ...], levels: int
) -> np.ndarray:
    captured: list[list[torch.Tensor]] = []
    # the encoder's output is kept as the model runs: one forward pass gives features and mask
    hook = model.encoder.register_forward_hook(lambda _m, _i, out: captured.append(out))
    rows = []
    try:
        for batch in inference_batches(images):
            captured.clear()
            pet = torch.sigmoid(model(to_input(batch, device)).float())
            boxes = pet_boxes(pet)
            maps = [f.float() for f in captured[0][-levels:]]
            rows.append(torch.cat([pool(f, pet, boxes, parts) for f in maps], 1).cpu())
    finally:
        hook.remove()
    return torch.cat(rows).numpy()


def pool(
    feature: torch.Tensor, pet: torch.Tensor, boxes: torch.Tensor, parts: tuple[str, ...]
) -> torch.Tensor:
    """(N, C, h, w) feature map, (N, 1, H, W) pet probability and its boxes -> (N, k*C)."""
    out = []
    weight = torch.nn.functional.adaptive_avg_pool2d(pet, feature.shape[-2:])
    if "pooled" in parts:
        out += [feature.mean((2, 3)), feature.amax((2, 3))]
    if "masked" in parts:
        out += [weighted_mean(feature, weight), weighted_mean(feature, 1 - weight)]
        # max over the pet; where no pixel is pet, over the whole map instead
        inside = weight > 0.5
        inside = inside | ~inside.flatten(1).any(1)[:, None, None, None]
        out.append(feature.masked_fill(~inside, float("-inf")).amax((2, 3)))
    if "grid" in parts:
        out.append(grid_features(feature, weight, boxes, pet.shape[-1]))
    return torch.cat(out, 1)


def weighted_mean(feature: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return (feature * weight).sum((2, 3)) / weight.sum((2, 3)).clamp(min=1e-6)


def pet_boxes(pet: torch.Tensor) -> torch.Tensor:
    """(N, 5) boxes (index, x0, y0, x1, y1) in input pixels around each predicted pet; the
    whole image where the model sees no pet."""
    inside = pet[:, 0] > 0.5
    rows, cols = inside.any(2), inside.any(1)
    height, width = inside.shape[1:]
    y0, x0 = rows.int().argmax(1), cols.int().argmax(1)
    y1, x1 = height - rows.flip(1).int().argmax(1), width - cols.flip(1).int().argmax(1)
    found = rows.any(1)
    boxes = torch.stack(
        [
            torch.arange(len(pet), device=pet.device),
            torch.where(found, x0, 0),
            torch.where(found, y0, 0),
            torch.where(found, x1, width),
            torch.where(found, y1, height),
        ],
        1,
    )
    return boxes.float()


def grid_features(
    feature: torch.Tensor, weight: torch.Tensor, boxes: torch.Tensor, image_size: int
) -> torch.Tensor:
    """Pet-weighted means of the features in a GRID x GRID grid laid over the pet's box.

    Global pooling forgets where things are; cats and dogs differ in parts (ears, muzzle,
    tail) at places relative to the body. The grid keeps that, at the box's scale. Pets face
    either way, so each cell is paired with its mirror cell: their mean and half their
    absolute difference do not change when the pet turns around.
    """
    scale = feature.shape[-1] / image_size
    align = {"output_size": GRID, "spatial_scale": scale, "sampling_ratio": 2, "aligned": True}
    cells = roi_align(feature * weight, boxes, **align) / roi_align(weight, boxes, **align).clamp(
        min=1e-3
    )
    mirror = cells.flip(-1)
    return torch.cat(
        [((cells + mirror) / 2).flatten(1), ((cells - mirror).abs() / 2).flatten(1)], 1
    )
