"""`python -m harness.predict`: foreground masks for image files, from a registered model.

    python -m harness.predict --model models:/harness-unet@champion a.jpg b.png --out masks/

Each image is decoded as RGB and squashed to the square size the model was trained at
(`image_size` in the model's metadata, else its input signature), with the same antialiased
bilinear resize as the training data. The model's foreground probabilities are resized back to the
image's own size (bilinear) and thresholded, and each mask is written as an 8-bit greyscale
PNG `<out>/<image stem>.png`: 255 = foreground, 0 = background.

The model is any MLflow model that `harness.registry` logs: `models:/NAME@ALIAS`,
`models:/NAME/VERSION` or `runs:/RUN_ID/PATH` (the rules of `harness.registry.uris`, the same
in every command), or a local model folder. Its pyfunc `predict` takes float32 (N, 3, S, S) in
[0, 1] and returns foreground probabilities (N, 1, S, S). Every image is decoded before the
model runs, so a file that does not decode stops the command with nothing written.
"""

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np
import torch
import torchvision.transforms.v2.functional as tvf
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from torchvision.io import ImageReadMode, decode_image, write_png
from torchvision.transforms import InterpolationMode

from harness.cli import option, options_from, parser_for, probability, run_main, tracking_uri_option
from harness.errors import HarnessError, user_error
from harness.names import DEFAULT_TRACKING_URI, Param
from harness.registry import uris
from harness.tracking import require_store

BATCH_SIZE = 32
FOREGROUND, BACKGROUND = 255, 0


@dataclass(frozen=True)
class ServedModel:
    model: mlflow.pyfunc.PyFuncModel
    image_size: int

    def probabilities(self, images: np.ndarray) -> np.ndarray:
        """float32 (N, 3, S, S) in [0, 1] -> float32 foreground probabilities (N, S, S)."""
        out = [
            np.asarray(self.model.predict(images[start : start + BATCH_SIZE]))
            for start in range(0, len(images), BATCH_SIZE)
        ]
        return np.concatenate(out)[:, 0]


def load_served_model(model_uri: str, tracking_uri: str = DEFAULT_TRACKING_URI) -> ServedModel:
    """Load through an explicit tracking/registry URI (no process-global MLflow state)."""
    model = load_model(mlflow.pyfunc.load_model, model_uri, tracking_uri)
    return ServedModel(model, model_image_size(model, model_uri))


def load_model(loader, model_uri: str, tracking_uri: str = DEFAULT_TRACKING_URI):
    """`loader` (an MLflow flavour's load_model) on a model folder, or on a model URI
    (`harness.registry.uris`) downloaded from `tracking_uri`. A malformed URI, a missing store
    or model is a one-line error naming where it looked; a local store that is not there is
    not created."""
    if Path(model_uri).is_dir():
        try:
            return loader(model_uri)
        except (MlflowException, OSError) as error:
            raise user_error(f"cannot load model {model_uri}", error) from None
    if not uris.has_model_scheme(model_uri):
        raise HarnessError(f"cannot load model {model_uri}: no such folder, and not a model URI")
    ref = uris.parse(model_uri)  # before the store: a typo needs none to be reported
    require_store(tracking_uri)
    model = uris.resolve(ref, MlflowClient(tracking_uri))
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = mlflow.artifacts.download_artifacts(
                artifact_uri=model.location,
                dst_path=tmp,
                tracking_uri=tracking_uri,
                registry_uri=tracking_uri,
            )
            return loader(local)
    except (MlflowException, OSError) as error:
        raise user_error(f"cannot load model {model_uri} from {tracking_uri}", error) from None


def model_image_size(model: mlflow.pyfunc.PyFuncModel, model_uri: str) -> int:
    size = (model.metadata.metadata or {}).get(Param.IMAGE_SIZE)
    if size is None and model.metadata.signature is not None:
        inputs = model.metadata.signature.inputs
        if inputs is not None and inputs.is_tensor_spec() and len(inputs.inputs) == 1:
            shape = inputs.inputs[0].shape
            if len(shape) == 4 and shape[2] == shape[3] and shape[2] > 0:
                size = shape[2]
    if size is None:
        raise HarnessError(f"model {model_uri} does not say its image size (metadata image_size)")
    return int(size)


def read_image(path: Path) -> torch.Tensor:
    """uint8 (3, H, W), RGB; one-line HarnessError when the file does not decode."""
    try:
        data = torch.frombuffer(bytearray(path.read_bytes()), dtype=torch.uint8)
    except OSError as error:
        raise HarnessError(f"cannot read image {path}: {error.strerror or error}") from None
    try:
        return decode_image(data, mode=ImageReadMode.RGB)
    except (RuntimeError, ValueError):
        # torchvision's message is a multi-line C++ trace; one line is what the user needs
        raise HarnessError(f"cannot read image {path}: corrupt, or not JPEG/PNG/WebP/GIF") from None


def to_model_input(image: torch.Tensor, image_size: int) -> np.ndarray:
    """uint8 (3, H, W) -> float32 (3, S, S) in [0, 1], resized as the training data was."""
    resized = tvf.resize(
        image, [image_size, image_size], interpolation=InterpolationMode.BILINEAR, antialias=True
    )
    return resized.float().div_(255).numpy()


def to_mask(probabilities: np.ndarray, height: int, width: int, threshold: float) -> torch.Tensor:
    """(S, S) foreground probabilities -> uint8 (1, height, width), FOREGROUND or BACKGROUND."""
    resized = tvf.resize(
        torch.from_numpy(probabilities)[None],
        [height, width],
        interpolation=InterpolationMode.BILINEAR,
        antialias=True,
    )
    return torch.where(resized > threshold, FOREGROUND, BACKGROUND).to(torch.uint8)


def mask_paths(images: list[Path], out_dir: Path) -> list[Path]:
    outputs = [out_dir / f"{path.stem}.png" for path in images]
    seen: dict[Path, Path] = {}
    for image, output in zip(images, outputs):
        if output in seen:
            raise HarnessError(f"{seen[output]} and {image} would both write {output}")
        seen[output] = image
    return outputs


def write_masks(
    served: ServedModel, images: list[torch.Tensor], outputs: list[Path], threshold: float
) -> None:
    batch = np.stack([to_model_input(image, served.image_size) for image in images])
    probabilities = served.probabilities(batch)
    for output in {path.parent for path in outputs}:
        output.mkdir(parents=True, exist_ok=True)
    for image, probs, output in zip(images, probabilities, outputs):
        write_png(to_mask(probs, image.shape[1], image.shape[2], threshold), str(output))


@dataclass(frozen=True)
class PredictOptions:
    images: list[Path] = option("images", nargs="+", type=Path, help="image files (JPEG, PNG, ...)")
    out: Path = option("--out", type=Path, required=True, help="folder for the mask PNGs")
    model: str = option(
        "--model", default=uris.CHAMPION_URI, help=f"{uris.FORMS} or a model folder"
    )
    tracking_uri: str = tracking_uri_option()
    threshold: float = option(
        "--threshold", type=probability, default=0.5, help="foreground above this probability"
    )


def build_parser() -> argparse.ArgumentParser:
    return parser_for(
        "python -m harness.predict",
        "Write a mask PNG (255 = foreground, 0 = background) for each image, at the image's own "
        "size, using a registered model.",
        PredictOptions,
    )


def main(argv: list[str] | None = None) -> int:
    args = options_from(PredictOptions, build_parser().parse_args(argv))
    missing = [path for path in args.images if not path.is_file()]
    if missing:
        raise HarnessError(f"no such image file: {missing[0]}")
    outputs = mask_paths(args.images, args.out)  # name clashes fail before any work
    images = [read_image(path) for path in args.images]  # so do files that do not decode
    served = load_served_model(args.model, args.tracking_uri)
    write_masks(served, images, outputs, args.threshold)
    print(f"{len(outputs)} mask(s) written to {args.out} (model input {served.image_size}px)")
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))
