"""``train.py`` end to end in subprocesses: fit, validate, test and predict on tiny data with a local-dir model."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import timm
from timm.models import save_for_hf

from reid_lightning.data import ReIDDataModule
from reid_lightning.features import DeepFeatures
from reid_lightning.models import ReIDModule
from reid_lightning.retrieval import search

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("cli")
    model = timm.create_model("test_efficientnet", pretrained=False, num_classes=0)
    save_for_hf(model, folder / "tiny_model", safe_serialization=True)
    return folder


def run_cli(workdir: Path, *args: str, cwd: Path | None = None, stderr: list | None = None) -> str:
    command = [
        sys.executable, str(REPO / "train.py"), *args, "--config", str(REPO / "configs" / "demo.yaml"),
        "--model.backbone", f"local-dir:{workdir / 'tiny_model'}", "--model.pretrained", "true",
        "--data.synthetic_dir", str(workdir / "data"), "--data.synthetic", "true", "--data.synthetic_individuals", "6",
        "--data.synthetic_images_per_individual", "8", "--data.synthetic_image_size", "32",
        "--data.image_size", "32", "--data.batch_size", "8", "--trainer.max_epochs", "2",
        "--trainer.enable_progress_bar", "false",
    ]
    done = subprocess.run(command, check=False, cwd=cwd or workdir, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    if stderr is not None:
        stderr.append(done.stderr)
    return done.stdout


def results_of(stdout: str) -> dict:
    path = Path(stdout.strip().splitlines()[-1].removeprefix("results written to "))
    return json.loads(path.read_text())


def test_fit_validate_test_predict(workdir):
    run_cli(workdir, "fit")
    checkpoint = workdir / "checkpoints" / "last.ckpt"
    # each fit keeps its checkpoints in its own folder; checkpoints/last.ckpt points to the newest run's last
    assert checkpoint.is_symlink() and checkpoint.resolve() == workdir / "checkpoints" / "version_0" / "last.ckpt"
    # the best checkpoint by val/mAP is named without Lightning's "val/" prefix (auto_insert_metric_name=False)
    assert any(re.fullmatch(r"epoch00[01]-mAP0\.\d{4}\.ckpt", p.name)
               for p in (workdir / "checkpoints" / "version_0").iterdir())

    # validating the last checkpoint reproduces the last epoch's validation metrics logged during fit
    validated = results_of(run_cli(workdir, "validate", "--ckpt_path", str(checkpoint)))
    assert validated["stage"] == "validate"
    logged = pd.read_csv(workdir / "logs" / "lightning_logs" / "version_0" / "metrics.csv")
    last_epoch = logged.dropna(subset=["val/mAP"]).iloc[-1]
    for name in ("val/top1", "val/top5", "val/mAP", "val/maxF1"):
        assert validated["metrics"][name] == pytest.approx(last_epoch[name], abs=1e-6), name

    printed = run_cli(workdir, "test", "--ckpt_path", str(checkpoint))
    assert "DataLoader 1" not in printed  # one metrics table, not one identical column per loader
    tested = results_of(printed)
    assert tested["ckpt_path"] == str(checkpoint)
    # the same numbers recomputed in plain Python from the checkpoint: embed -> search -> metrics
    model = ReIDModule.load_from_checkpoint(checkpoint, map_location="cpu")
    data = ReIDDataModule(synthetic_dir=str(workdir / "data"), synthetic=True, synthetic_individuals=6,
                          synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32,
                          test_ratio=0.3, val_ratio=0.15, batch_size=8)
    data.setup("test")
    embed = DeepFeatures(model, batch_size=8, progress=False)
    test_images, gallery_images = data.dataset("test"), data.dataset("train")
    test_embeddings = embed(test_images)
    expected = search(test_embeddings, embed(gallery_images), k=5, query_labels=test_images.labels,
                      gallery_labels=gallery_images.labels).metrics(top_k=(1, 5))
    for name in ("top1", "top5", "mAP", "maxF1", "num_queries"):
        assert tested["metrics"][f"test/{name}"] == pytest.approx(expected[name], abs=1e-5), name

    out = run_cli(workdir, "predict", "--ckpt_path", str(checkpoint))
    predicted = pd.read_csv(out.strip().splitlines()[-1].removeprefix("predictions written to "))
    # without predict_dir: every test image once, in order, answered from the training gallery with the
    # checkpoint's validation-chosen threshold
    assert predicted["image_id"].tolist() == test_images.metadata["image_id"].tolist()
    assert predicted["path"].tolist() == test_images.metadata["path"].tolist()
    results = search(test_embeddings, embed(gallery_images), k=1, gallery_labels=gallery_images.labels_string)
    assert model.threshold is not None
    top1 = results.candidate_scores[:, 0].numpy()
    expected_identity = [name if score >= model.threshold else "new_individual"
                         for name, score in zip(results.candidate_identities[:, 0], top1, strict=True)]
    assert predicted["identity"].tolist() == expected_identity
    assert predicted["score"].to_numpy() == pytest.approx(top1, abs=1e-5)
    assert predicted["confidence"].between(0, 1).all()


def test_a_second_fit_never_replaces_the_first_runs_checkpoints(workdir, tmp_path):
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / ".gitkeep").touch()  # as in a fresh clone
    warnings = []
    run_cli(workdir, "fit", cwd=tmp_path, stderr=warnings)
    assert "exists and is not empty" not in warnings[0]
    first = {path: path.read_bytes() for path in (tmp_path / "checkpoints" / "version_0").iterdir()}
    assert len(first) >= 2  # last.ckpt and the best
    run_cli(workdir, "fit", "--model.projection_dim", "16", cwd=tmp_path)  # another recipe
    assert {path: path.read_bytes() for path in (tmp_path / "checkpoints" / "version_0").iterdir()} == first
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve() == tmp_path / "checkpoints" / "version_1" / "last.ckpt"
    assert (tmp_path / "checkpoints" / "version_1" / "last.ckpt").read_bytes() != first[
        tmp_path / "checkpoints" / "version_0" / "last.ckpt"]


def test_print_config_shows_checkpoint_defaults(workdir):
    done = subprocess.run([sys.executable, str(REPO / "train.py"), "fit", "--config",
                           str(REPO / "configs" / "demo.yaml"), "--print_config"],
                          check=False, cwd=workdir, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "monitor: val/mAP" in done.stdout and "dirpath: checkpoints" in done.stdout


def test_metrics_from_candidates_are_named_by_depth_and_monitored(workdir, tmp_path):
    run_cli(workdir, "fit", "--model.exact_metrics", "false", "--model.candidates", "5", cwd=tmp_path)
    logged = pd.read_csv(tmp_path / "logs" / "lightning_logs" / "version_0" / "metrics.csv")
    assert "val/mAP@5" in logged.columns and "val/maxF1@5" in logged.columns
    assert "val/mAP" not in logged.columns  # an approximation never logged under the exact metric's name
    # the default checkpoint monitor followed the name (Lightning would fail on a missing monitored key)
    names = [p.name for p in (tmp_path / "checkpoints").rglob("*.ckpt")]
    assert any(re.fullmatch(r"epoch00[01]-mAP@5=[01]\.\d{4}\.ckpt", name) for name in names), names


def test_runs_without_a_logger_get_their_own_checkpoint_folders(workdir, tmp_path):
    import lightning as L

    from reid_lightning.callbacks import LastCheckpoint

    data = ReIDDataModule(synthetic_dir=str(workdir / "data"), synthetic_individuals=6,
                          synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32, batch_size=8)
    for run in range(2):
        checkpoints = LastCheckpoint(dirpath=str(tmp_path / "checkpoints"), save_last=True, monitor="val/mAP",
                                     mode="max")
        trainer = L.Trainer(max_epochs=1, logger=False, callbacks=[checkpoints], enable_progress_bar=False,
                            accelerator="cpu", default_root_dir=tmp_path, num_sanity_val_steps=0)
        trainer.fit(ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax"), datamodule=data)
        assert Path(checkpoints.last_model_path) == tmp_path / "checkpoints" / f"run_{run}" / "last.ckpt"
    assert (tmp_path / "checkpoints" / "last.ckpt").resolve() == tmp_path / "checkpoints" / "run_1" / "last.ckpt"
    assert (tmp_path / "checkpoints" / "run_0" / "last.ckpt").is_file()
