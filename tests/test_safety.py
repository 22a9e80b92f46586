"""Files a user passes are untrusted: a checkpoint with a pickle payload is refused before the payload runs;
results files are written atomically and never replace another run's."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import save_file

from reid_lightning.cli import write_results
from reid_lightning.features.weights import load_weights
from reid_lightning.models import ReIDModule
from reid_lightning.rundir import write_new_file

REPO = Path(__file__).resolve().parent.parent
TINY = {"backbone": "resnet10t", "pretrained": False, "loss": "softmax", "num_classes": 3}


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: the marker file exists iff the payload ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return Path.touch, (self.marker,)


def poisoned_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload_ran"
    weights = ReIDModule(**TINY).state_dict()
    path = tmp_path / "poisoned.ckpt"
    torch.save({"state_dict": weights, "epoch": 0, "extra": Payload(marker)}, path)
    return path, marker


def test_init_ckpt_refuses_a_pickle_payload(tmp_path):
    path, marker = poisoned_checkpoint(tmp_path)
    with pytest.raises(ValueError, match=r"init_ckpt '.*poisoned.ckpt' holds more than tensors"):
        ReIDModule(**TINY, init_ckpt=str(path))
    assert not marker.exists()


def test_init_ckpt_loads_plain_and_safetensors_weights(tmp_path):
    source = ReIDModule(**TINY)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "plain.ckpt")
    save_file({k: v.contiguous() for k, v in source.state_dict().items() if k.startswith(("backbone.", "neck."))},
              tmp_path / "weights.safetensors")
    for name in ("plain.ckpt", "weights.safetensors"):
        loaded = ReIDModule(**TINY, init_ckpt=str(tmp_path / name)).state_dict()
        for key, value in source.state_dict().items():
            if key.startswith("backbone."):
                assert torch.equal(loaded[key], value), (name, key)


def test_named_weights_refuse_a_pickle_payload(tmp_path):
    path, marker = poisoned_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="Cannot read weights file"):
        load_weights("aliked-n16", path=path)
    assert not marker.exists()


def test_cli_ckpt_path_refuses_a_pickle_payload(tmp_path):
    path, marker = poisoned_checkpoint(tmp_path)
    command = [
        sys.executable, str(REPO / "train.py"), "validate", "--config", str(REPO / "configs" / "demo.yaml"),
        "--model.backbone", "resnet10t", "--model.pretrained", "false", "--data.synthetic_dir", str(tmp_path / "data"),
        "--data.synthetic", "true", "--data.synthetic_individuals", "3", "--data.synthetic_images_per_individual",
        "4", "--data.synthetic_image_size", "32", "--data.image_size", "32", "--ckpt_path", str(path),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "REID_LIGHTNING_CACHE": str(tmp_path / "cache")}
    done = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode != 0
    assert "Weights only load failed" in done.stderr or "weights_only" in done.stderr, done.stderr[-2000:]
    assert not marker.exists()


def test_results_files_are_never_overwritten(tmp_path):
    first = write_new_file(tmp_path / "results.json", b"first")
    second = write_new_file(tmp_path / "results.json", b"second")
    assert (first.name, second.name) == ("results.json", "results-1.json")
    assert first.read_bytes() == b"first" and second.read_bytes() == b"second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results-1.json", "results.json"]  # no temp files left


def test_two_runs_sharing_a_log_dir_keep_both_results(tmp_path, capsys):
    def trainer(mAP: float) -> SimpleNamespace:
        logger = SimpleNamespace(log_dir=str(tmp_path))
        return SimpleNamespace(loggers=[logger], default_root_dir=str(tmp_path), is_global_zero=True,
                               strategy=SimpleNamespace(broadcast=lambda value: value),
                               callback_metrics={"test/mAP": torch.tensor(mAP), "val/mAP": torch.tensor(0.0)})

    paths = [write_results(trainer(value), "test", None) for value in (0.25, 0.75)]
    assert paths[0] != paths[1]
    assert [json.loads(p.read_text())["metrics"] for p in paths] == [{"test/mAP": 0.25}, {"test/mAP": 0.75}]
    assert capsys.readouterr().out.strip().splitlines()[-1] == f"results written to {paths[1]}"
