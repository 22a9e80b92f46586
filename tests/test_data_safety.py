"""A user's data folder and predict folder are read-only to every run: fit, validate, test (with reranking) and
predict leave them byte-identical, also with the demo config whose synthetic set once overwrote a metadata.csv."""

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from reid_lightning.data.synthetic import make_synthetic_individuals

REPO = Path(__file__).resolve().parent.parent


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under ``folder`` (hidden ones too): relative path -> (kind, mode, size, mtime, content hash)."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        info = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        entries[str(path.relative_to(folder))] = ("dir" if path.is_dir() else "file", info.st_mode, info.st_size,
                                                  info.st_mtime_ns, digest)
    return entries


@pytest.fixture(scope="module")
def user_folders(tmp_path_factory):
    """A user's data folder (5 individuals, metadata.csv) and a folder of new photos, made read-only."""
    root = tmp_path_factory.mktemp("user")
    made = tmp_path_factory.mktemp("made")
    metadata = pd.read_csv(make_synthetic_individuals(made, num_individuals=6, images_per_individual=8,
                                                      image_size=32, seed=7))
    data, new = root / "my_animals", root / "new_photos"
    shutil.copytree(made / "images", data / "images")
    metadata[metadata["identity"] != "ind_005"][["image_id", "identity", "path"]].to_csv(data / "metadata.csv",
                                                                                      index=False)
    new.mkdir()
    for source in ("ind_000/000.jpg", "ind_005/001.jpg"):
        shutil.copy(made / "images" / source, new / source.replace("/", "_"))
    for path in (*data.rglob("*"), *new.rglob("*"), data, new):
        path.chmod(0o555 if path.is_dir() else 0o444)
    yield data, new
    for path in (data, new, *data.rglob("*"), *new.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)


def run(workdir: Path, *args: str) -> subprocess.CompletedProcess:
    command = [sys.executable, str(REPO / "train.py"), *args, "--trainer.enable_progress_bar", "false",
               "--trainer.accelerator", "cpu"]
    done = subprocess.run(command, check=False, cwd=workdir, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_no_subcommand_writes_into_the_data_or_predict_folder(user_folders, tmp_path):
    data, new = user_folders
    before = snapshot(data), snapshot(new)
    # the README's commands: the demo config plus the user's --data.root (no --data.synthetic false needed)
    demo = ["--config", str(REPO / "configs" / "demo.yaml"), "--data.root", str(data), "--data.image_size", "32",
            "--data.batch_size", "8", "--data.val_ratio", "0.25"]
    sift = ["--config", str(REPO / "configs" / "rerank" / "sift_mnn.yaml")]
    run(tmp_path, "fit", *demo, "--trainer.max_epochs", "1")
    checkpoint = str(tmp_path / "checkpoints" / "last.ckpt")
    run(tmp_path, "validate", *demo, "--ckpt_path", checkpoint)
    run(tmp_path, "test", *demo, *sift, "--ckpt_path", checkpoint)
    predicted = run(tmp_path, "predict", *demo, *sift, "--ckpt_path", checkpoint, "--data.predict_dir", str(new),
                    "--predict_writer.gallery_cache", str(tmp_path / "gallery_cache"))
    assert "predictions written to" in predicted.stdout
    assert (snapshot(data), snapshot(new)) == before
    # the synthetic demo set was never generated for these runs
    assert not (tmp_path / ".cache" / "reid_lightning" / "synthetic").exists()
