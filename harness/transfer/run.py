"""`run_transfer`: features of the labelled images, the classifier, and its MLflow run."""

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from harness.data import SPECIES, SegmentationSet, load_splits
from harness.devices import resolve_device
from harness.errors import HarnessError
from harness.figures import style
from harness.names import Artifact, Param, Role, Tag, VersionTag, split_images_param
from harness.tracking import Tracker
from harness.transfer.classifier import SpeciesScores, fit_classifier, species_scores
from harness.transfer.features import encoder_features, parse_features
from harness.transfer.options import TransferOptions
from harness.transfer.source import Source, load_encoder_source, resolve_source


@dataclass(frozen=True)
class TransferResult:
    run_id: str
    source: Source
    c: float
    scores: dict[str, SpeciesScores]  # split -> scores


def run_transfer(options: TransferOptions) -> TransferResult:
    parts = parse_features(options.features)
    device = resolve_device(options.device)
    tracker = Tracker(options.tracking_uri, create=False)
    source = resolve_source(tracker, options.model, options.run_id)
    data = options.data or source.params.get(Param.DATASET)
    image_size = options.image_size or int(source.params.get(Param.IMAGE_SIZE, 0)) or None
    if data is None or image_size is None:
        raise HarnessError(
            f"run {source.run_id} does not say its data: pass --data and --image-size"
        )
    splits = load_splits(data, image_size, cache_dir=options.cache_dir)
    model = load_encoder_source(tracker, source.run_id, device)
    sets = {name: labelled(getattr(splits, name), name) for name in ("train", "val", "test")}
    features = {
        name: encoder_features(model, s.images, device, parts, options.levels)
        for name, s in sets.items()
    }
    classifier, c = fit_classifier(
        features["train"], sets["train"].species, features["val"], sets["val"].species
    )
    scores = {
        name: species_scores(sets[name].species, classifier.predict(features[name]))
        for name in sets
    }
    run_id = log_transfer(tracker, options, source, splits.spec, image_size, sets, c, scores)
    tracker.log_dataset_inputs(run_id, splits)
    return TransferResult(run_id, source, c, scores)


def labelled(data: SegmentationSet, split: str) -> SegmentationSet:
    """The images whose species is known; both species must be in the training split."""
    known = data.subset(data.species >= 0)
    present = set(np.unique(known.species).tolist())
    if split == "train" and present != {0, 1}:
        raise HarnessError(
            f"the training split has {len(known)} images with a known species, "
            f"not both cats and dogs: the data needs species labels (synthetic or oxford-pet)"
        )
    if not len(known):
        raise HarnessError(f"the {split} split has no image with a known species")
    return known


def log_transfer(
    tracker: Tracker,
    options: TransferOptions,
    source: Source,
    data: str,
    image_size: int,
    sets: dict[str, SegmentationSet],
    c: float,
    scores: dict[str, SpeciesScores],
) -> str:
    tags = {Tag.ROLE: Role.TRANSFER, Tag.SOURCE_RUN_ID: source.run_id}
    if source.model_name is not None:
        tags |= {
            Tag.MODEL_NAME: source.model_name,
            Tag.MODEL_VERSION: source.model_version,
        }
    name = (
        f"transfer-{source.model_name}-v{source.model_version}"
        if source.model_name
        else f"transfer-{source.run_id[:8]}"
    )
    run_id = tracker.start_run(tracker.experiment_id(options.experiment), name, tags=tags)
    with tracker.run_status(run_id):
        params = {
            Param.MODEL: options.model if options.run_id is None else "",
            Param.DATASET: data,
            Param.IMAGE_SIZE: image_size,
            Param.DEPTH: source.params[Param.DEPTH],
            Param.BASE_CHANNELS: source.params[Param.BASE_CHANNELS],
            Param.FEATURES: options.features,
            Param.LEVELS: options.levels,
            Param.CLASSIFIER: "logistic regression, standardised, class_weight=balanced",
            Param.C: c,
            **{split_images_param(split): len(s) for split, s in sets.items()},
        }
        metrics = {k: v for split, s in scores.items() for k, v in s.metrics(split).items()}
        tracker.log(run_id, metrics, params=params)
        figure = confusion_figure(scores["test"].confusion)
        tracker.log_figure(run_id, figure, Artifact.CONFUSION_FIGURE)
        style.close(figure)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / Artifact.CONFUSION_JSON
            matrix = {
                "labels": list(SPECIES),
                "rows_true_columns_predicted": scores["test"].confusion.tolist(),
            }
            path.write_text(json.dumps(matrix))
            tracker.client.log_artifact(run_id, str(path))
    if source.model_name is not None:
        tracker.client.set_model_version_tag(
            source.model_name, source.model_version, VersionTag.TRANSFER_RUN, run_id
        )
    return run_id


def confusion_figure(cm: np.ndarray):
    fig, ax = style.plt.subplots(figsize=(4, 3.6))
    ax.imshow(cm, cmap="Blues")
    for (row, col), count in np.ndenumerate(cm):
        share = count / max(1, cm[row].sum())
        colour = "white" if count > cm.max() / 2 else "black"
        ax.text(col, row, f"{count}\n{share:.0%}", ha="center", va="center", color=colour)
    ax.set_xticks(range(len(SPECIES)), SPECIES)
    ax.set_yticks(range(len(SPECIES)), SPECIES)
    ax.set(xlabel="predicted", ylabel="true", title="Test confusion matrix")
    ax.grid(False)
    fig.tight_layout()
    return fig
