"""``fit`` killed after its first checkpoint and resumed with ``--ckpt_path`` ends exactly like an uninterrupted run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from reid_lightning.data import make_synthetic_individuals

REPO = Path(__file__).resolve().parent.parent
EPOCHS = 3


def fit_command(data: Path, *extra: str) -> list[str]:
    return [
        sys.executable, str(REPO / "train.py"), "fit", "--config", str(REPO / "configs" / "demo.yaml"),
        "--model.backbone", "resnet10t", "--model.pretrained", "false",
        "--data.synthetic_dir", str(data), "--data.synthetic", "true", "--data.synthetic_individuals", "4",
        "--data.synthetic_images_per_individual", "6", "--data.synthetic_image_size", "32",
        "--data.image_size", "32", "--data.batch_size", "4", "--trainer.max_epochs", str(EPOCHS),
        "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false", *extra,
    ]


def environment(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "REID_LIGHTNING_CACHE": str(tmp_path / "cache")}


def run_fit(folder: Path, data: Path, env: dict[str, str], *extra: str) -> None:
    folder.mkdir(exist_ok=True)
    done = subprocess.run(fit_command(data, *extra), cwd=folder, env=env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def kill_after_first_checkpoint(folder: Path, data: Path, env: dict[str, str]) -> None:
    folder.mkdir(exist_ok=True)
    process = subprocess.Popen(fit_command(data), cwd=folder, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    last = folder / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline and process.poll() is None:
            try:  # the file is complete once it loads
                epoch = torch.load(last, map_location="cpu", weights_only=True)["epoch"]
                break
            except (FileNotFoundError, RuntimeError, EOFError):
                time.sleep(0.02)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL, "fit ended before it could be killed"
    assert epoch < EPOCHS - 1, "the kill came too late to test a resume"


def final_metrics(folder: Path) -> pd.Series:
    logged = pd.concat(pd.read_csv(p) for p in sorted((folder / "logs").rglob("metrics.csv")))
    return logged.dropna(subset=["val/mAP"]).sort_values("epoch").iloc[-1]


@pytest.mark.slow
def test_killed_fit_resumes_exactly(tmp_path):
    data = tmp_path / "data"
    make_synthetic_individuals(data, num_individuals=4, images_per_individual=6, image_size=32)
    env = environment(tmp_path)
    run_fit(tmp_path / "whole", data, env)

    interrupted = tmp_path / "interrupted"
    kill_after_first_checkpoint(interrupted, data, env)
    run_fit(interrupted, data, env, "--ckpt_path", str(interrupted / "checkpoints" / "last.ckpt"))

    whole, resumed = final_metrics(tmp_path / "whole"), final_metrics(interrupted)
    assert whole["epoch"] == resumed["epoch"] == EPOCHS - 1
    for name in ("val/mAP", "val/top1", "val/maxF1"):
        assert resumed[name] == whole[name], name
    weights = [torch.load(folder / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
               for folder in (tmp_path / "whole", interrupted)]
    assert weights[0].keys() == weights[1].keys()
    for name in weights[0]:
        assert torch.equal(weights[0][name], weights[1][name]), name
