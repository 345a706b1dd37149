import pytest
import torch

from harness.data import SegmentationSet
from harness.errors import HarnessError
from harness.models import UNet
from harness.trainer import DivergedError, StopReason, TrainConfig, evaluate, fit
from tests.helpers import toy_splits

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def splits():
    return toy_splits()


@pytest.mark.parametrize("depth", [2, 3, 4, 5, 6])
def test_unet_keeps_the_spatial_size_and_outputs_one_logit_map(depth):
    model = UNet(depth=depth, base_channels=4)
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1, 64, 64)


def test_trainer_learns_well_above_the_all_background_baseline(splits):
    config = TrainConfig(
        depth=2, base_channels=8, lr=3e-3, batch_size=8, aug_p=0.0, max_epochs=6, patience=6
    )
    result = fit(config, splits.train, splits.val, device=CPU)
    pet_fraction = splits.val.masks.mean()
    all_background_iou = (1 - pet_fraction) / 2  # background IoU = 1 - pet share, pet IoU = 0
    assert result.best_val_iou > all_background_iou + 0.25
    assert result.history[-1].train_loss < result.history[0].train_loss


def test_same_seed_same_metrics_on_cpu(splits):
    config = TrainConfig(depth=2, base_channels=4, batch_size=8, aug_p=0.5, max_epochs=2, seed=7)
    first = fit(config, splits.train, splits.val, device=CPU)
    second = fit(config, splits.train, splits.val, device=CPU)
    assert [r.val_loss for r in first.history] == [r.val_loss for r in second.history]
    assert [r.train_loss for r in first.history] == [r.train_loss for r in second.history]


def test_early_stopping_stops_and_restores_the_best_weights(splits):
    # validation masks that belong to other images: training cannot keep improving on them
    val = splits.val
    mismatched = SegmentationSet(val.images, val.masks[::-1].copy(), val.species, val.names)
    config = TrainConfig(
        depth=2, base_channels=4, lr=1e-2, batch_size=16, aug_p=0.0, max_epochs=30, patience=2
    )
    result = fit(config, splits.train, mismatched, device=CPU, precision="fp32")

    assert result.stop_reason == StopReason.EARLY_STOPPED
    assert result.epochs_run == result.best_epoch + config.patience < config.max_epochs
    assert result.best_val_iou == max(r.val.iou for r in result.history)
    # the returned model scores what its best epoch scored, not what the last epoch did
    _, scores = evaluate(result.model, mismatched, CPU)
    assert scores.iou == pytest.approx(result.best_val_iou, abs=1e-9)
    assert scores.iou != pytest.approx(result.history[-1].val.iou, abs=1e-9)


def test_max_epochs_is_the_stop_reason_when_patience_never_runs_out(splits):
    config = TrainConfig(depth=2, base_channels=4, max_epochs=2, patience=5, aug_p=0.0)
    result = fit(config, splits.train, splits.val, device=CPU)
    assert result.stop_reason == StopReason.MAX_EPOCHS
    assert result.epochs_run == 2


def test_a_huge_learning_rate_is_reported_as_divergence(splits):
    config = TrainConfig(depth=2, base_channels=4, lr=10.0, batch_size=8, aug_p=0.0, max_epochs=5)
    with pytest.raises(DivergedError, match="diverged"):
        fit(config, splits.train, splits.val, device=CPU)


def test_hooks_see_every_epoch_and_can_stop_the_run(splits):
    config = TrainConfig(depth=2, base_channels=4, max_epochs=5, aug_p=0.0)

    class StopError(Exception):
        pass

    def stop_at_two(result):
        if result.epoch == 2:
            raise StopError

    with pytest.raises(StopError):
        fit(config, splits.train, splits.val, device=CPU, on_epoch=[stop_at_two])


def test_compiled_training_matches_eager_and_restores_a_plain_model(splits):
    config = TrainConfig(depth=2, base_channels=4, lr=3e-3, batch_size=16, aug_p=0.0, max_epochs=2)
    eager = fit(config, splits.train, splits.val, device=CPU, precision="fp32")
    compiled = fit(
        config, splits.train, splits.val, device=CPU, precision="fp32", compile_model=True
    )
    # the model handed back is the plain module: it saves and loads without compile's prefixes
    assert isinstance(compiled.model, UNet)
    assert compiled.model.state_dict().keys() == eager.model.state_dict().keys()
    # same seed, same data order: compilation changes float rounding, not the training
    for a, b in zip(eager.history, compiled.history, strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=1e-3)
        assert b.val.iou == pytest.approx(a.val.iou, abs=1e-3)


def test_cosine_schedule_keeps_the_first_epoch_and_anneals_the_rest(splits):
    def losses(schedule: str) -> list[float]:
        config = TrainConfig(
            depth=2, base_channels=4, batch_size=8, aug_p=0.0, max_epochs=3, lr_schedule=schedule
        )
        result = fit(config, splits.train, None, device=CPU, precision="fp32")
        return [r.train_loss for r in result.history]

    constant, cosine = losses("constant"), losses("cosine")
    assert cosine[0] == constant[0]  # the first epoch runs at the full learning rate
    assert cosine[1:] != constant[1:]


def test_an_unknown_lr_schedule_is_refused():
    with pytest.raises(HarnessError, match="invalid lr_schedule: 'linear'"):
        TrainConfig(lr_schedule="linear")
