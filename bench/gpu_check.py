"""What one CUDA GPU does with this code, in one table, in under five minutes.

    python bench/gpu_check.py [--budget-s 280]

On a machine without CUDA it says so in one line and exits 0. With a GPU, side by side:
- the bare eager loop (bench/common.py) at 64 and 256 px, float32 and the automatic precision
  (the trainer's `auto`: bfloat16 where the GPU has it, else float16), channels_last on and off:
  training images per second, median of the epochs after the first;
- the harness trainer (`trainer.fit`, always channels_last) at the same sizes and precisions;
- `--n-jobs 1, 2, 4` trials sharing the GPU (threads of one search, on a small fixed-work
  space: random sampler, no pruning, no early stopping, 2 trials per job): trials per minute
  from the first trial's start to the last one's end in the storage, and the peak GPU memory
  allocated during the search divided by the trials that ran at once;
- `python -m harness.search --trials 10 --device cuda` end to end (the default space and data,
  with its confirmation and refit), in a fresh folder: wall time and exit status. It gets what
  is left of `--budget-s` and is stopped at the end of it.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import as_tensors, bare_epochs, steady

from harness.cli import quiet_libraries
from harness.data import load_splits
from harness.search import SearchOptions, run_search
from harness.search.studies import FINISHED_STATES
from harness.trainer import TrainConfig, autocast_dtype, fit

SIZES = (64, 256)
DATA = "synthetic:512"
DEPTH, BASE_CHANNELS, BATCH_SIZE = 3, 16, 16  # the default space's recipe
EPOCHS = 3
N_JOBS = (1, 2, 4)
SHARED_EPOCHS, SHARED_SIZE = 3, 64

FIXED_WORK_SPACE = """
[study]
sampler = "random"
pruner = "none"
max_epochs = {epochs}
image_size = {size}

[params.depth]
type = "int"
low = 2
high = 4

[params.lr]
type = "float"
low = 1e-4
high = 1e-2
log = true

[fixed]
base_channels = 16
batch_size = 16
patience = 1000
aug_p = 0.2
"""


def precisions(device: torch.device) -> dict[str, torch.dtype | None]:
    auto = autocast_dtype("auto", device)
    return {"fp32": None, f"auto ({str(auto).removeprefix('torch.')})": auto}


def images_per_s(count: int, times: list[float]) -> str:
    return f"{count / steady(times):,.0f} img/s"


def throughput_rows(device: torch.device) -> list[tuple[str, str, str]]:
    rows = []
    for size in SIZES:
        splits = load_splits(DATA, size)
        x, y = as_tensors(splits.train.images, splits.train.masks)
        val_x, _ = as_tensors(splits.val.images, splits.val.masks)
        for name, dtype in precisions(device).items():
            for channels_last in (True, False):
                times = bare_epochs(x, y, DEPTH, BASE_CHANNELS, BATCH_SIZE, EPOCHS,
                                    channels_last=channels_last, dtype=dtype, val_x=val_x,
                                    device=device)  # fmt: skip
                layout = "channels_last" if channels_last else "NCHW"
                rows.append(("bare loop", f"{size} px, {name}, {layout}",
                             images_per_s(len(x), times)))  # fmt: skip
            precision = "fp32" if dtype is None else "auto"
            config = TrainConfig(depth=DEPTH, base_channels=BASE_CHANNELS, batch_size=BATCH_SIZE,
                                 aug_p=0.0, max_epochs=EPOCHS, patience=EPOCHS)  # fmt: skip
            result = fit(config, splits.train, splits.val, device=device, precision=precision)
            times = [r.epoch_time_s for r in result.history]
            rows.append(("harness trainer", f"{size} px, {name}, channels_last",
                         images_per_s(len(splits.train), times)))  # fmt: skip
    return rows


def sharing_rows(device: torch.device, folder: Path) -> list[tuple[str, str, str]]:
    space = folder / "fixed.toml"
    space.write_text(FIXED_WORK_SPACE.format(epochs=SHARED_EPOCHS, size=SHARED_SIZE))
    rows = []
    for n_jobs in N_JOBS:
        torch.cuda.reset_peak_memory_stats(device)
        options = SearchOptions(
            trials=2 * n_jobs, space=str(space), data=DATA, study=f"jobs{n_jobs}",
            storage=f"sqlite:///{folder / f'optuna{n_jobs}.db'}",
            tracking_uri=f"sqlite:///{folder / f'mlflow{n_jobs}.db'}",
            n_jobs=n_jobs, device=str(device), promote=False, confirm=False, refit=False,
            progress_bar=False,
        )  # fmt: skip
        study = run_search(options).study
        finished = study.get_trials(deepcopy=False, states=FINISHED_STATES)
        first = min(t.datetime_start for t in finished)
        last = max(t.datetime_complete for t in finished)
        per_min = 60 * len(finished) / (last - first).total_seconds()
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20 / n_jobs
        setting = (
            f"--n-jobs {n_jobs}, {len(finished)} trials x {SHARED_EPOCHS} epochs, {SHARED_SIZE} px"
        )
        rows.append(("trials sharing the GPU", setting, f"{per_min:.1f} trials/min"))
        rows.append(("peak GPU memory per trial", setting, f"{peak_mb:,.0f} MiB"))
    return rows


def end_to_end_row(folder: Path, seconds: float) -> tuple[str, str, str]:
    command = [sys.executable, "-m", "harness.search", "--trials", "10", "--device", "cuda",
               "--no-progress", "--no-promote"]  # fmt: skip
    setting = "python -m harness.search --trials 10 --device cuda"
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=folder, capture_output=True, text=True,
                              timeout=max(seconds, 1))  # fmt: skip
    except subprocess.TimeoutExpired:
        return ("10-trial search", setting, f"not done in {seconds:.0f} s (budget)")
    wall = time.perf_counter() - started
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return ("10-trial search", setting, f"exit {done.returncode} after {wall:.0f} s: {last}")
    return ("10-trial search", setting, f"{wall:.0f} s, exit 0")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=280, help="the whole check's")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_check: no CUDA device here, nothing to measure")
        return 0
    started = time.perf_counter()
    quiet_libraries()
    device = torch.device("cuda:0")
    with tempfile.TemporaryDirectory() as tmp:
        rows = throughput_rows(device)
        rows += sharing_rows(device, Path(tmp))
        left = args.budget_s - (time.perf_counter() - started)
        folder = Path(tmp) / "search"
        folder.mkdir()
        rows.append(end_to_end_row(folder, left))
    print(f"GPU: {torch.cuda.get_device_name(device)}, torch {torch.__version__}, "
          f"CUDA {torch.version.cuda}; {time.perf_counter() - started:.0f} s in all")  # fmt: skip
    print("| measure | setting | figure |\n|---|---|---|")
    for measure, setting, figure in rows:
        print(f"| {measure} | {setting} | {figure} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
