"""Export to a bundle and the torch-free runtime: same embeddings and answers as ``train.py predict``, no torch
needed, bad bundles and photos named."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from reid_lightning.data.synthetic import make_synthetic_individuals
from reid_lightning.models import ReIDModule

REPO = Path(__file__).resolve().parent.parent
DATA_ARGS = ["--data.metadata", "known.csv", "--data.image_size", "32", "--data.val_ratio", "0.3"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A checkpoint with an open-set threshold, calibration and discovery cut chosen on validation, the predict
    answers of ``train.py predict`` on new photos, and its bundle."""
    root = tmp_path_factory.mktemp("export")
    make_synthetic_individuals(root / "data", num_individuals=9, images_per_individual=8, image_size=32)
    metadata = pd.read_csv(root / "data" / "metadata.csv")
    metadata[~metadata["identity"].isin(["ind_007", "ind_008"])].to_csv(root / "data" / "known.csv", index=False)
    new = root / "new"
    (new / "sub").mkdir(parents=True)
    shutil.copy(root / "data" / "images" / "ind_000" / "000.jpg", new / "a.jpg")
    Image.open(root / "data" / "images" / "ind_003" / "002.jpg").rotate(10).save(new / "sub" / "b.png")
    for individual in ("ind_007", "ind_008"):
        for i in range(3):
            shutil.copy(root / "data" / "images" / individual / f"00{i}.jpg", new / f"{individual}_{i}.jpg")
    (new / "broken.jpg").write_bytes(b"not an image")

    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, discovery_threshold=0.9)
    from reid_lightning.data import ReIDDataModule

    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_checkpointing=False, enable_model_summary=False, default_root_dir=root)
    trainer.validate(model, datamodule=ReIDDataModule(root=str(root / "data"), metadata="known.csv",
                                                      image_size=32, val_ratio=0.3))
    assert model.open_set.named_right is not None
    checkpoint = root / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    common = ["--model.backbone", "resnet10t", "--model.discovery_threshold", "0.9", "--data.root",
              str(root / "data"), *DATA_ARGS, "--ckpt_path", str(checkpoint)]
    predict = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "predict", *common, "--data.predict_dir", str(new),
         "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
         "--predict_output", str(root / "predict" / "predictions.csv")],
        check=False, cwd=root, capture_output=True, text=True, timeout=300)
    assert predict.returncode == 0, predict.stderr[-3000:]
    export = subprocess.run([sys.executable, "-m", "reid_lightning.export", *common, "--output",
                             str(root / "bundle"), "--trainer.enable_progress_bar", "false"],
                            check=False, cwd=root, capture_output=True, text=True, timeout=300)
    assert export.returncode == 0, export.stderr[-3000:]
    assert export.stdout.strip().splitlines()[-1] == f"bundle written to {root / 'bundle'}"
    return root


def test_runtime_embeddings_match_the_torch_model(exported):
    from reid_lightning.runtime.identifier import Identifier

    identifier = Identifier(exported / "bundle")
    model = ReIDModule.load_from_checkpoint(exported / "model.ckpt", weights_only=True).eval()
    paths = sorted((exported / "data" / "images").rglob("*.jpg"))[:20]
    from torchvision import transforms as T

    transform = T.Compose([T.Resize((32, 32)), T.ToTensor(), T.Normalize(model.input_config["mean"],
                                                                          model.input_config["std"])])
    with torch.no_grad():
        expected = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])).numpy()
    got = identifier.embed([str(p) for p in paths])
    cosine = (got * expected).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(expected, axis=1)
    assert cosine.min() >= 0.9999
    # the gallery embeddings are torch's own, one per labelled image of the data set
    assert len(identifier.gallery.identities) == 7 * 8


def test_runtime_predictions_equal_train_py_predict(exported, tmp_path):
    output = tmp_path / "runtime.csv"
    done = subprocess.run([sys.executable, "-m", "reid_lightning.runtime", str(exported / "bundle"), "--photos",
                           str(exported / "new"), "--output", str(output)],
                          check=False, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stderr.splitlines()[-1].endswith("embedding photos: 8/8")  # the readable photos, counted
    ours, theirs = pd.read_csv(output), pd.read_csv(exported / "predict" / "predictions.csv")
    assert list(ours.columns) == list(theirs.columns) and len(ours) == len(theirs) == 8
    exact = ["image_id", "path", "identity", "is_new", "gallery_image", "proposed_identity"]
    pd.testing.assert_frame_equal(ours[exact], theirs[exact])
    np.testing.assert_allclose(ours["score"], theirs["score"], atol=1e-5)
    np.testing.assert_allclose(ours["confidence"], theirs["confidence"], atol=1e-4)
    for mine, predicted in zip(ours["top5"], theirs["top5"], strict=True):
        assert [n for n, _ in json.loads(mine)] == [n for n, _ in json.loads(predicted)]
    # the answers are not trivial: known and new photos, the two new animals grouped apart
    assert ours["is_new"].any() and not ours["is_new"].all()
    assert (ours["proposed_identity"].str.startswith("new_")).any()
    listed = pd.read_csv(tmp_path / "unreadable_images.csv")
    assert listed["path"].map(lambda p: Path(p).name).tolist() == ["broken.jpg"]
    assert listed.columns.tolist() == pd.read_csv(exported / "predict" / "unreadable_images.csv").columns.tolist()


def test_runtime_runs_where_torch_cannot_be_imported(exported, tmp_path):
    script = tmp_path / "no_torch.py"
    script.write_text(textwrap.dedent(f"""
        import importlib.abc, sys
        BLOCKED = ("torch", "torchvision", "lightning", "pytorch_lightning", "timm", "scipy", "sklearn", "pandas")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"{{name}} is not installed here")
        sys.meta_path.insert(0, Block())
        try:
            import torch
        except ImportError:
            pass
        else:
            raise SystemExit("torch imported")
        from reid_lightning.runtime import Identifier
        identifier = Identifier({str(exported / "bundle")!r})
        rows, unreadable = identifier.identify([{str(exported / "new" / "a.jpg")!r}])
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        print(rows[0]["identity"], len(unreadable))
    """))
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["ind_000", "0"]


def test_bad_bundles_are_named(exported, tmp_path):
    from reid_lightning.runtime.bundle import BundleError
    from reid_lightning.runtime.identifier import Identifier

    def copy(name):
        target = tmp_path / name
        shutil.copytree(exported / "bundle", target)
        return target

    other = copy("other_version")
    manifest = json.loads((other / "manifest.json").read_text())
    (other / "manifest.json").write_text(json.dumps(dict(manifest, format_version=99)))
    with pytest.raises(BundleError, match="format version 99.*reads version 1"):
        Identifier(other)
    truncated = copy("truncated")
    data = (truncated / "model.onnx").read_bytes()
    (truncated / "model.onnx").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match=r"model\.onnx' is truncated"):
        Identifier(truncated)
    missing = copy("missing")
    (missing / "gallery.csv").unlink()
    with pytest.raises(BundleError, match=r"gallery\.csv' is missing"):
        Identifier(missing)
    unfinished = copy("unfinished")
    (unfinished / "manifest.json").unlink()
    with pytest.raises(BundleError, match="not a finished bundle"):
        Identifier(unfinished)
    done = subprocess.run([sys.executable, "-m", "reid_lightning.runtime", str(truncated), "--photos",
                           str(exported / "new"), "--output", str(tmp_path / "p.csv")],
                          check=False, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "model.onnx" in done.stderr
    # nothing in a bundle is unpickled
    assert not [p for p in (exported / "bundle").iterdir() if p.suffix in (".pkl", ".pt", ".ckpt")]


def test_export_never_replaces_and_leaves_no_half_bundle(exported, tmp_path):
    command = [sys.executable, "-m", "reid_lightning.export", "--model.backbone", "resnet10t", "--data.root",
               str(exported / "data"), *DATA_ARGS, "--ckpt_path", str(exported / "model.ckpt"), "--output",
               str(exported / "bundle"), "--trainer.enable_progress_bar", "false"]
    done = subprocess.run(command, check=False, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode != 0 and "exists" in done.stderr
    assert sorted(p.name for p in exported.iterdir() if p.name.startswith(".bundle")) == []


def test_added_photos_are_answered_from_the_grown_gallery(exported, tmp_path):
    from reid_lightning.runtime.identifier import Identifier

    identifier = Identifier(exported / "bundle")
    photos = [str(exported / "new" / f"ind_007_{i}.jpg") for i in range(3)]
    before, _ = identifier.identify(photos[:1])
    assert before[0]["identity"] != "ind_007"
    size = identifier.add(photos[:2], ["ind_007", "ind_007"])
    assert size == 7 * 8 + 2
    saved = identifier.save(tmp_path / "grown")
    grown = Identifier(saved)
    after, _ = grown.identify(photos[:1])
    top = json.loads(after[0]["top5"])[0]
    assert top[0] == "ind_007" and top[1] == pytest.approx(1.0, abs=1e-5)  # the added photo itself
    assert len(grown.gallery.identities) == size
