"""bench/gpu_check.py on a machine without CUDA (or with its GPUs hidden): one line, status 0."""

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "bench" / "gpu_check.py"


def test_without_cuda_it_says_so_in_one_line_and_exits_0(tmp_path):
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run([sys.executable, str(SCRIPT)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines() == [
        "gpu_check: no CUDA device here, nothing to measure"
    ]
    assert done.stderr == ""
    assert list(tmp_path.iterdir()) == []  # nothing measured, nothing written
