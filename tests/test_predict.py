"""`python -m harness.predict` on image files, against a real promoted model."""

import json
import os
import re
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from harness import predict
from harness.cli import run_main
from harness.finetune import load_unet
from harness.models import UNet
from harness.names import Tag
from harness.registry.promotion import promote_run
from harness.runs import log_evaluation, train_tracked
from harness.tracking import Tracker
from harness.trainer import TrainConfig
from tests.helpers import toy_splits
from tests.servers import HOST, _wait_for, free_port, stop_group

README = Path(__file__).resolve().parent.parent / "README.md"

TINY = TrainConfig(depth=2, base_channels=4, batch_size=16, patience=1, aug_p=0.0, max_epochs=2)


@pytest.fixture(scope="module")
def model_uri(tracking_uri) -> str:
    """A real trained model (trained at 32 px), promoted to champion of its own name."""
    tracker = Tracker(tracking_uri)
    splits = toy_splits()
    run_id = tracker.start_run(
        tracker.experiment_id("predict-tests"), "tiny", tags={Tag.ROLE: "train"}
    )
    device = torch.device("cpu")
    with tracker.run_status(run_id):
        result = train_tracked(tracker, run_id, TINY, splits, device)
        log_evaluation(tracker, run_id, result.model, splits, device)
    name = f"predict-{uuid.uuid4().hex[:8]}"
    promote_run(tracker, run_id, name)
    return f"models:/{name}@champion"


def write_images(folder) -> dict[str, tuple[int, int]]:
    """Bright discs on dark noise like the training data, at other sizes; name -> (w, h)."""
    rng = np.random.default_rng(0)
    sizes = {"cat.jpg": (70, 50), "dog.png": (21, 33), "gray.png": (40, 40)}
    for filename, (width, height) in sizes.items():
        yy, xx = np.mgrid[:height, :width]
        pixels = (rng.random((height, width, 3)) * 80).astype(np.uint8)
        disc = (yy - height / 2) ** 2 + (xx - width / 2) ** 2 < (min(width, height) / 3) ** 2
        pixels[disc] = 220
        image = Image.fromarray(pixels)
        if filename == "gray.png":
            image = image.convert("L")  # decoded as RGB all the same
        image.save(folder / filename)
    return sizes


def run(argv, capsys):
    code = run_main(predict.main, [str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_writes_one_mask_per_image_at_its_original_size(
    model_uri, tracking_uri, tmp_path, capsys
):
    sizes = write_images(tmp_path)
    out_dir = tmp_path / "masks"

    code, out, err = run(
        [
            *(tmp_path / f for f in sizes),
            "--model",
            model_uri,
            "--tracking-uri",
            tracking_uri,
            "--out",
            out_dir,
        ],
        capsys,
    )

    assert (code, err) == (0, "")
    assert "3 mask(s) written" in out and "32px" in out
    assert sorted(p.name for p in out_dir.iterdir()) == ["cat.png", "dog.png", "gray.png"]
    for filename, size in sizes.items():
        mask = Image.open(out_dir / filename.replace(".jpg", ".png"))
        assert mask.size == size and mask.mode == "L"
        assert set(np.unique(np.asarray(mask))) <= {0, 255}


def test_served_model_resizes_to_its_training_size(model_uri, tracking_uri, tmp_path):
    served = predict.load_served_model(model_uri, tracking_uri)
    assert served.image_size == 32
    image = predict.read_image(tmp_path / next(iter(write_images(tmp_path))))
    batch = predict.to_model_input(image, served.image_size)[None]
    assert batch.shape == (1, 3, 32, 32) and batch.dtype == np.float32
    probabilities = served.probabilities(batch)
    assert probabilities.shape == (1, 32, 32)
    assert 0.0 <= probabilities.min() <= probabilities.max() <= 1.0


def test_image_that_does_not_decode_exits_2_and_writes_nothing(
    model_uri, tracking_uri, tmp_path, capsys
):
    write_images(tmp_path)
    (tmp_path / "broken.jpg").write_bytes(b"not a jpeg at all")
    out_dir = tmp_path / "masks"

    code, out, err = run(
        [
            tmp_path / "cat.jpg",
            tmp_path / "broken.jpg",
            "--model",
            model_uri,
            "--tracking-uri",
            tracking_uri,
            "--out",
            out_dir,
        ],
        capsys,
    )

    assert code == 2
    assert err.count("\n") == 1 and "broken.jpg" in err and "Traceback" not in err
    assert not out_dir.exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "models:/no-such-model@champion"], "cannot load model"),
        (["--model", "MODEL", "missing.png"], "no such image file"),
        (["--model", "MODEL", "a/cat.jpg"], "would both write"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(
    argv, message, model_uri, tracking_uri, tmp_path, capsys
):
    (tmp_path / "a").mkdir()
    write_images(tmp_path / "a")
    write_images(tmp_path)
    argv = [model_uri if a == "MODEL" else a for a in argv]

    code, out, err = run(
        [*argv, tmp_path / "cat.jpg", "--tracking-uri", tracking_uri, "--out", tmp_path / "m"],
        capsys,
    )

    assert code == 2
    assert err.count("\n") == 1 and message in err and "Traceback" not in err


def readme_serve_command() -> str:
    (line,) = [line for line in README.read_text().splitlines() if " models serve " in line]
    return line


def test_the_readme_s_serving_command_serves_the_champion(model_uri, tracking_uri, tmp_path):
    """The README's `mlflow models serve` line, as written but for the store, the model and
    the port, run with the venv off the PATH (MLflow starts `uvicorn` by its name)."""
    venv_bin = Path(sys.executable).parent
    port = free_port()
    command = (
        readme_serve_command()
        .replace("$PWD/.venv/bin", str(venv_bin))
        .replace(".venv/bin/", f"{venv_bin}/")
        .replace("sqlite:///mlflow.db", tracking_uri)
        .replace("models:/harness-unet@champion", model_uri)
        .replace("--port 5001", f"--port {port}")
    )
    assert f"--host {HOST}" in command
    env = {k: v for k, v in os.environ.items() if k not in ("PATH", "VIRTUAL_ENV")}
    env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        server = subprocess.Popen(["bash", "-c", command], cwd=tmp_path, env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://{HOST}:{port}"
    try:
        _wait_for(lambda: _answers(f"{url}/ping"), server, "mlflow models serve", log, 180)
        images = np.random.default_rng(0).random((2, 3, 32, 32), dtype=np.float32)
        request = urllib.request.Request(
            f"{url}/invocations",
            data=json.dumps({"inputs": images.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            served = np.array(json.load(response)["predictions"], dtype=np.float32)
    finally:
        stop_group(server)
    expected = predict.load_served_model(model_uri, tracking_uri).model.predict(images)
    assert served.shape == (2, 1, 32, 32)
    np.testing.assert_allclose(served, expected, atol=1e-6)


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def test_the_readme_s_one_liner_returns_the_champion_as_a_unet_to_fine_tune(
    model_uri, tracking_uri
):
    (line,) = re.findall(r"^unet = load_unet\(.*\)$", README.read_text(), re.MULTILINE)
    assert "models:/harness-unet@champion" in line
    unet = load_unet(model_uri, tracking_uri=tracking_uri)
    assert isinstance(unet, UNet) and unet.training

    images = np.random.default_rng(1).random((2, 3, 32, 32), dtype=np.float32)
    with torch.no_grad():
        mine = torch.sigmoid(unet.eval()(torch.from_numpy(images))).numpy()
    served = predict.load_served_model(model_uri, tracking_uri).model.predict(images)
    np.testing.assert_allclose(mine, served, atol=1e-5)  # the champion's weights

    unet.train()
    before = [p.detach().clone() for p in unet.parameters()]
    optimizer = torch.optim.SGD(unet.parameters(), lr=0.1)
    unet(torch.from_numpy(images)).mean().backward()
    optimizer.step()
    assert any(not torch.equal(a, b) for a, b in zip(before, unet.parameters()))


def test_a_missing_model_names_the_store_it_looked_in(tracking_uri, capsys, tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    code = run_main(predict.main, ["--model", "models:/no-such-model@champion", "--out",
                                   "m", str(tmp_path / "a.png"), "--tracking-uri", tracking_uri])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert f"cannot load model models:/no-such-model@champion from {tracking_uri}" in err
