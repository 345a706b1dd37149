"""Which device a run or a trial trains on."""

import torch

from harness.errors import HarnessError


def resolve_device(name: str = "auto") -> torch.device:
    """`auto` is the first GPU when there is one, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise HarnessError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"--device {name} asked for, but no CUDA device is available")
    return torch.device(name)


def device_for_trial(name: str, trial_number: int, cuda_count: int | None = None) -> torch.device:
    """Concurrent trials go round-robin over the visible GPUs (`auto` or `cuda`).

    With one GPU every trial shares it: small UNets leave most of a GPU idle, so several
    trials at once use it better than one. An explicit `cuda:N` or `cpu` pins every trial.
    """
    if cuda_count is None:
        cuda_count = torch.cuda.device_count()
    if name in ("auto", "cuda") and cuda_count > 0:
        return torch.device(f"cuda:{trial_number % cuda_count}")
    return resolve_device(name)
