"""Shared pieces of the benchmarks: the bare PyTorch loop the harness is measured against."""

import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from harness.models import UNet  # noqa: E402


def as_tensors(images: np.ndarray, masks: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The yardstick's data: float tensors already in memory, NCHW."""
    # np.array: the splits are read-only mappings of the data cache
    x = torch.from_numpy(np.array(images)).permute(0, 3, 1, 2).float().div(255).contiguous()
    y = torch.from_numpy(np.array(masks)).unsqueeze(1).float()
    return x, y


def bare_epochs(
    x: torch.Tensor,
    y: torch.Tensor,
    depth: int,
    base_channels: int,
    batch_size: int,
    epochs: int,
    channels_last: bool = False,
    dtype: torch.dtype | None = None,
    val_x: torch.Tensor | None = None,
    seed: int = 0,
    device: torch.device | None = None,
) -> list[float]:
    """A plain eager training loop (Adam, BCE), plus a forward pass over `val_x` per epoch
    when given (the harness validates every epoch); returns seconds per epoch."""
    device = device or torch.device("cpu")
    torch.manual_seed(seed)
    model = UNet(depth, base_channels).to(device)
    x, y = x.to(device), y.to(device)
    val_x = None if val_x is None else val_x.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = nn.BCEWithLogitsLoss()
    autocast = torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        model.train()
        for index in torch.randperm(len(x), device=device).split(batch_size):
            optimizer.zero_grad()
            with autocast:
                logits = model(x[index])
            loss_fn(logits.float(), y[index]).backward()
            optimizer.step()
        if val_x is not None:
            model.eval()
            with torch.no_grad(), autocast:
                for batch in val_x.split(64):
                    model(batch)
        if device.type == "cuda":
            torch.cuda.synchronize(device)  # the clock stops when the GPU has done the work
        times.append(time.perf_counter() - start)
    return times


def steady(times: list[float]) -> float:
    """Median epoch time after the first (which pays one-off allocation and warm-up)."""
    return float(np.median(times[1:] if len(times) > 1 else times))


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> str:
    import os
    import platform

    gpu = f", {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores{gpu}, torch {torch.__version__}, {torch.get_num_threads()} threads"
