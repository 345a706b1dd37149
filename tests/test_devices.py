"""Device choice per trial, tested without a GPU through the `cuda_count` argument."""

import pytest
import torch

from harness.devices import device_for_trial, resolve_device
from harness.errors import HarnessError

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks a machine without CUDA")


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_concurrent_trials_go_round_robin_over_the_visible_gpus(name):
    devices = [device_for_trial(name, number, cuda_count=3) for number in range(7)]
    assert [d.type for d in devices] == ["cuda"] * 7
    assert [d.index for d in devices] == [0, 1, 2, 0, 1, 2, 0]


def test_with_one_gpu_every_trial_shares_it():
    assert {device_for_trial("auto", number, cuda_count=1) for number in range(5)} == {
        torch.device("cuda:0")
    }


def test_without_a_gpu_auto_trains_on_the_cpu():
    assert {device_for_trial("auto", number, cuda_count=0) for number in range(3)} == {
        torch.device("cpu")
    }


def test_cpu_pins_every_trial_even_with_gpus():
    assert {device_for_trial("cpu", number, cuda_count=4) for number in range(5)} == {
        torch.device("cpu")
    }


def test_trial_numbers_from_several_workers_spread_over_the_gpus():
    # workers share one study, so their concurrent trials have consecutive numbers
    running = {worker: number for worker, number in zip("abcd", range(12, 16))}
    devices = {w: device_for_trial("auto", n, cuda_count=4).index for w, n in running.items()}
    assert sorted(devices.values()) == [0, 1, 2, 3]


@no_cuda
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_asking_for_cuda_without_it_is_one_clear_error(name):
    with pytest.raises(HarnessError, match="no CUDA device"):
        device_for_trial(name, 0, cuda_count=0)
    with pytest.raises(HarnessError, match="no CUDA device"):
        resolve_device(name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_an_explicit_gpu_pins_every_trial():
    assert {device_for_trial("cuda:0", number) for number in range(4)} == {torch.device("cuda:0")}


def test_an_unknown_device_is_refused():
    with pytest.raises(HarnessError, match="unknown device 'tpu'"):
        device_for_trial("tpu", 0, cuda_count=2)
