"""``train.py test`` with reranking stops within seconds of SIGTERM or SIGINT sent while it is matching pairs
(Lightning's own SIGTERM handler only sets a flag that its loops read between batches; matching runs in a callback
hook), exits non-zero and says which phase it stopped."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PROBES = Path(__file__).resolve().parent / "probes"
SECONDS_PER_PAIR = 2.0  # the probe matcher's sleep per pair: ~30 calibration pairs, a minute without interruption

RERANK_CONFIG = """
trainer:
  callbacks:
    - class_path: reid_lightning.callbacks.LocalFeatureReranking
      init_args:
        shortlist: 4
        scorers:
          - class_path: reid_lightning.similarity.PairScorer
            init_args:
              image_size: 16
              cache_features: false
              matcher:
                class_path: slow_matcher.SlowMatcher
                init_args: {{seconds: {seconds}, marker: '{marker}', batch_size: 1}}
"""


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("interrupt_data")  # the synthetic images, written by the first run


def start_test_run(folder: Path, data_root: Path) -> tuple[subprocess.Popen, Path, Path]:
    """``train.py test`` with the slow probe matcher; returns the process, its marker file and its log file."""
    marker, log = folder / "matching", folder / "output.txt"
    config = folder / "rerank.yaml"
    config.write_text(RERANK_CONFIG.format(seconds=SECONDS_PER_PAIR, marker=marker))
    command = [
        sys.executable, str(REPO / "train.py"), "test", "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(config), "--model.backbone", "torch.nn.Flatten", "--model.pretrained", "false",
        "--data.synthetic_dir", str(data_root / "data"), "--data.synthetic", "true", "--data.synthetic_individuals", "6",
        "--data.synthetic_images_per_individual", "8", "--data.synthetic_image_size", "32",
        "--data.image_size", "32", "--trainer.enable_progress_bar", "false", "--trainer.logger", "false",
        "--trainer.accelerator", "cpu", "--trainer.default_root_dir", str(folder),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(PROBES), str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with open(log, "w") as output:  # a file, not a pipe: the progress bars never block the child
        process = subprocess.Popen(command, cwd=folder, stdout=output, stderr=subprocess.STDOUT, env=env)
    return process, marker, log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_while_matching_stops_the_run_within_seconds(tmp_path, data_root, signum):
    process, marker, log = start_test_run(tmp_path, data_root)
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():  # the first calibration pair is being matched
            assert process.poll() is None, f"the run ended before matching:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"matching never started:\n{log.read_text()[-3000:]}"
            time.sleep(0.1)
        process.send_signal(signum)
        sent = time.monotonic()
        try:
            returncode = process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running 30 s after {signum.name}:\n{log.read_text()[-3000:]}")
        elapsed = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    output = log.read_text()
    print(f"{signum.name}: exited {returncode} after {elapsed:.1f} s")
    assert returncode != 0, output[-3000:]
    # the phase named: which split's calibration, and what it was doing
    assert (f"{signum.name} received: stopped at a safe point during calibration (validation): SlowMatcher pairs"
            in output), output[-3000:]
    if signum == signal.SIGTERM:
        assert "Received SIGTERM" in output  # Lightning's handler, called in turn, saw it too
    assert "Detected KeyboardInterrupt, attempting graceful shutdown" in output  # Lightning's shutdown path
    assert len(marker.read_text().splitlines()) <= 2  # no pair begun after the one in progress
