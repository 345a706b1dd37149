"""`python -m harness.transfer --model models:/NAME@champion`: cat versus dog on a frozen encoder.

Transfer learning from the segmentation network: the UNet's encoder, frozen, turns every
image into features; a logistic regression (standardised features, class-balanced) learns
cat against dog on the training split; the test split scores it. The original report's
classifier collapsed onto cats (docs/transfer.md); balanced class weights and
balanced accuracy as the model-selection score keep this one from doing that.

Features (`--features`: parts joined by +), from the deepest `--levels` encoder levels, each
averaged over the image and its mirror image:

* `pooled`: global average and global max of every channel;
* `masked`: average over the predicted pet pixels, average over the background, and max over
  the pet, with the model's own predicted mask downsampled to each level;
* `grid`: pet-weighted averages in a 3 x 3 grid over the predicted pet's box, made
  independent of which way the pet faces.

`masked+grid` is the default; what each reaches is in docs/performance.md.

The encoder weights come from the source run's checkpoint (a plain state dict, loaded with
`weights_only=True`): a registered model is an exported graph, so `--model` (`models:/NAME@ALIAS`,
`models:/NAME/VERSION` or `runs:/RUN_ID/PATH`, the rules of `harness.registry.uris`) is resolved
to the run behind it, for a version its source run (`harness.source_run_id`); `--run-id` names
a run directly. The data and image size default to the run's own.

The result is an MLflow run in the experiment `harness-transfer`: per split (train, val,
test) `*_accuracy`, `*_balanced_accuracy`, `*_accuracy_cat`, `*_accuracy_dog`; the test
confusion matrix as `figures/confusion_matrix.png` and `confusion_matrix.json`; tags naming
the model, version and source run. The model version gets the tag `harness.transfer_run_id`.

The package: `source` finds the segmentation run and loads its frozen UNet, `features` turns
images into encoder features, `classifier` fits and scores the species classifier, `run`
(`run_transfer`) puts them together and records the MLflow run, `options` declares the
command's options and `python -m harness.transfer` is `command`.
"""

from harness.transfer.options import TransferOptions
from harness.transfer.run import TransferResult, run_transfer

__all__ = ["TransferOptions", "TransferResult", "run_transfer"]
