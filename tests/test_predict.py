"""Open-set threshold on validation, ``predict`` on folders of new photos, the gallery cache, 2-process predict."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from reid_lightning.callbacks import PredictionWriter
from reid_lightning.data import ReIDDataModule
from reid_lightning.data.synthetic import make_synthetic_individuals
from reid_lightning.inference import decision_inputs
from reid_lightning.metrics import open_set_metrics
from reid_lightning.models import ReIDModule

REPO = Path(__file__).resolve().parent.parent


def trainer(folder: Path, *callbacks) -> L.Trainer:
    return L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_checkpointing=False, enable_model_summary=False, default_root_dir=folder,
                     callbacks=list(callbacks))


def test_threshold_chosen_on_validation_beats_trivial_rules_on_test(tmp_path):
    # raw pixels as embeddings: weak but real identity signal, no training needed
    data = ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True, synthetic_individuals=12,
                          synthetic_images_per_individual=8, synthetic_image_size=32, image_size=32, split="open",
                          open_ratio=0.3, test_ratio=0.3, val_ratio=0.2, batch_size=16)
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False)
    run = trainer(tmp_path)
    run.validate(model, datamodule=data)
    # validation holds no unknown identity here: the threshold is chosen with identities held out
    assert decision_inputs(model.evaluation_results())["known"].all()
    chosen = model.threshold
    assert chosen is not None and run.callback_metrics["val/open/threshold"] == pytest.approx(chosen)

    cut = model.open_set.discovery_threshold
    assert cut is not None and model.open_set.discovery_ami is not None  # chosen on the held-out identities
    tested = run.test(model, datamodule=data)[0]
    assert model.threshold == chosen and model.open_set.discovery_threshold == cut  # never tuned on test
    inputs = decision_inputs(model.evaluation_results())
    assert (~inputs["known"]).any() and inputs["known"].any()
    always_known = open_set_metrics(**inputs, threshold=-math.inf)["gmean"]
    always_new = open_set_metrics(**inputs, threshold=math.inf)["gmean"]
    assert always_known == 0 and always_new == 0
    assert tested["test/open/gmean"] > 0.25
    assert tested["test/open/BAKS"] > 0 and tested["test/open/BAUS"] > 0
    # discovery metrics: the test queries of identities absent from the gallery, grouped at the validation cut
    results = model.evaluation_results()
    unknown = ~decision_inputs(results)["known"]
    embeddings = torch.stack([torch.as_tensor(np.asarray(data.dataset("test")[i][0])).flatten()
                              for i in range(results.num_queries)])[unknown]
    groups = model.open_set.group(embeddings).groups
    truth = results.query_labels[unknown].numpy()
    assert tested["test/discovery/ARI"] == pytest.approx(adjusted_rand_score(truth, groups), abs=1e-6)
    assert tested["test/discovery/AMI"] == pytest.approx(adjusted_mutual_info_score(truth, groups), abs=1e-6)
    assert tested["test/discovery/count_error"] == len(set(groups)) - len(set(truth))
    # a test on other photos changes neither cut
    run.test(model, datamodule=ReIDDataModule(synthetic_dir=str(tmp_path / "data"), synthetic=True,
                                              synthetic_individuals=12, synthetic_images_per_individual=8,
                                              synthetic_image_size=32, image_size=32, split="open", open_ratio=0.3,
                                              test_ratio=0.3, val_ratio=0.2, batch_size=16, seed=5))
    assert model.threshold == chosen and model.open_set.discovery_threshold == cut

    # the threshold travels with the checkpoint; --model.open_set_threshold overrides it
    path = tmp_path / "model.ckpt"
    run.save_checkpoint(path)
    loaded = ReIDModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.threshold == chosen
    assert loaded.open_set.discovery_threshold == cut
    overridden = ReIDModule.load_from_checkpoint(path, weights_only=True, open_set_threshold=0.123,
                                                 discovery_threshold=0.5)
    assert overridden.threshold == 0.123 and overridden.open_set_model.discovery_threshold == 0.5


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A data set of 6 known individuals, and a folder of new photos: copies of two known individuals' photos,
    3 photos of a 7th individual absent from the data set, and one unreadable file."""
    root = tmp_path_factory.mktemp("predict")
    metadata = pd.read_csv(make_synthetic_individuals(root / "data", num_individuals=7, images_per_individual=8,
                                                      image_size=32))
    metadata[metadata["identity"] != "ind_006"].to_csv(root / "data" / "known.csv", index=False)
    new = root / "new"
    (new / "sub").mkdir(parents=True)
    shutil.copy(root / "data" / "images" / "ind_000" / "000.jpg", new / "a.jpg")
    Image.open(root / "data" / "images" / "ind_003" / "002.jpg").save(new / "sub" / "b.png")
    for i in range(3):
        shutil.copy(root / "data" / "images" / "ind_006" / f"00{i}.jpg", new / f"unseen{i}.jpg")
    (new / "broken.jpg").write_bytes(b"not an image")
    return root


def predict_data(root: Path, **kwargs) -> ReIDDataModule:
    return ReIDDataModule(root=str(root / "data"), metadata="known.csv", image_size=32, batch_size=4,
                          predict_dir=str(root / "new"), **kwargs)


def test_predict_names_known_individuals_and_flags_the_unseen_one(photos, tmp_path):
    data = predict_data(photos)
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False, open_set_threshold=0.999)
    writer = PredictionWriter(output=str(tmp_path / "predictions.csv"))
    trainer(tmp_path, writer).predict(model, datamodule=data)
    frame = writer.predictions.set_index(writer.predictions["image_id"])
    pd.testing.assert_frame_equal(pd.read_csv(writer.path, keep_default_na=False)[["image_id", "identity"]],
                                  writer.predictions[["image_id", "identity"]])
    assert sorted(frame.index) == ["a.jpg", "sub/b.png", "unseen0.jpg", "unseen1.jpg", "unseen2.jpg"]
    assert frame.loc["sub/b.png", "path"] == str(photos / "new" / "sub" / "b.png")
    assert frame.loc["a.jpg", "identity"] == "ind_000" and not frame.loc["a.jpg", "is_new"]
    assert frame.loc["sub/b.png", "identity"] == "ind_003"
    assert frame.loc["a.jpg", "gallery_image"].endswith("ind_000/000.jpg")
    # the raw top-1 cosine is the score; no validation ran, so no calibrated confidence exists
    assert frame.loc["a.jpg", "score"] == pytest.approx(1.0, abs=1e-5) and np.isnan(frame.loc["a.jpg", "confidence"])
    for i in range(3):
        assert frame.loc[f"unseen{i}.jpg", "identity"] == "new_individual" and frame.loc[f"unseen{i}.jpg", "is_new"]
    top5 = json.loads(frame.loc["a.jpg", "top5"])
    assert top5[0] == ["ind_000", pytest.approx(1.0, abs=1e-5)] and len({name for name, _ in top5}) == len(top5) == 5
    # the unreadable file is reported, not silently dropped
    assert [Path(p).name for p in data.predict_images.unreadable["path"]] == ["broken.jpg"]
    assert pd.read_csv(tmp_path / "unreadable_images.csv")["path"].map(lambda p: Path(p).name).tolist() == ["broken.jpg"]


def test_gallery_cache_skips_reembedding_until_the_weights_change(photos, tmp_path):
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False, open_set_threshold=0.5)
    calls = []
    model.backbone.register_forward_hook(lambda module, args, output: calls.append(len(args[0])))
    cache = tmp_path / "cache"

    writer = PredictionWriter(output=str(tmp_path / "predictions.csv"), gallery_cache=str(cache))

    def images_embedded() -> int:
        calls.clear()
        trainer(tmp_path, writer).predict(model, datamodule=predict_data(photos))
        return sum(calls)

    gallery_size, new_photos = 6 * 8, 5
    assert images_embedded() == gallery_size + new_photos
    first = writer.predictions
    assert len(list(cache.iterdir())) == 1
    assert images_embedded() == new_photos  # read from the cache
    pd.testing.assert_frame_equal(writer.predictions, first)
    with torch.no_grad():  # another checkpoint: the key changes, the gallery is embedded again
        next(model.backbone.parameters()).mul_(1.01)
    assert images_embedded() == gallery_size + new_photos
    assert len(list(cache.iterdir())) == 2


@pytest.mark.slow
def test_two_process_predict_writes_every_input_once_in_order(photos, tmp_path):
    output = tmp_path / "out" / "predictions.csv"
    command = [
        sys.executable, str(REPO / "train.py"), "predict", "--config", str(REPO / "configs" / "demo.yaml"),
        "--model.backbone", "resnet10t", "--model.pretrained", "false", "--model.open_set_threshold", "0.5",
        "--data.synthetic", "false", "--data.root", str(photos / "data"), "--data.metadata", "known.csv",
        "--data.image_size", "32", "--data.eval_batch_size", "1", "--data.predict_dir", str(photos / "new"),
        "--trainer.strategy", "ddp", "--trainer.accelerator", "cpu", "--trainer.devices", "2",
        "--trainer.enable_progress_bar", "false", "--predict_output", str(output),
    ]
    done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == f"predictions written to {output}"
    frame = pd.read_csv(output)
    expected = sorted(str(p) for p in (photos / "new").rglob("*") if p.suffix in (".jpg", ".png")
                      and p.name != "broken.jpg")
    # 5 readable inputs over 2 processes (uneven shares): each exactly once, in input order
    assert frame["path"].tolist() == expected
    assert (output.parent / "unreadable_images.csv").is_file()


def test_predict_csv_paths_relative_to_the_csv_with_optional_bbox(photos, tmp_path):
    listing = photos / "new" / "list.csv"
    pd.DataFrame({"path": ["a.jpg", "unseen0.jpg"], "bbox": ["[0, 0, 16, 8]", ""]}).to_csv(listing, index=False)
    data = ReIDDataModule(root=str(photos / "data"), metadata="known.csv", image_size=32, predict_csv=str(listing))
    data.setup("predict")
    dataset = data.predict_dataset()
    assert [dataset.image_path(i) for i in range(2)] == [photos / "new" / "a.jpg", photos / "new" / "unseen0.jpg"]
    assert dataset.get_image(0).size == (16, 8) and dataset.get_image(1).size == (32, 32)  # cropped, full
    assert list(dataset.metadata["image_id"]) == ["a.jpg", "unseen0.jpg"]
    # the default gallery: every labelled image of the data set (train + val + test)
    assert len(data.predict_gallery()) == 6 * 8

    pd.DataFrame({"file": ["a.jpg"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(ValueError, match="needs a 'path' column"):
        ReIDDataModule(root=str(photos / "data"), metadata="known.csv", predict_csv=str(tmp_path / "bad.csv")
                       ).predict_dataset()


@pytest.mark.slow
def test_python_predict_writes_the_same_rows_as_train_py(photos, tmp_path):
    # a checkpoint whose open-set threshold and confidence calibration were chosen on validation
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet10t", pretrained=False)
    validation = trainer(tmp_path)
    validation.validate(model, datamodule=predict_data(photos, val_ratio=0.3))
    assert model.open_set is not None and model.open_set.named_right is not None
    checkpoint = tmp_path / "model.ckpt"
    validation.save_checkpoint(checkpoint)

    cli_output = tmp_path / "cli" / "predictions.csv"
    command = [sys.executable, str(REPO / "train.py"), "predict", "--model.backbone", "resnet10t",
               "--data.root", str(photos / "data"), "--data.metadata", "known.csv", "--data.image_size", "32",
               "--data.val_ratio", "0.3", "--data.predict_dir", str(photos / "new"), "--ckpt_path", str(checkpoint),
               "--trainer.accelerator", "cpu", "--trainer.enable_progress_bar", "false",
               "--predict_output", str(cli_output)]
    done = subprocess.run(command, check=False, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    loaded = ReIDModule.load_from_checkpoint(checkpoint, weights_only=True)
    writer = PredictionWriter(output=str(tmp_path / "python" / "predictions.csv"))
    trainer(tmp_path, writer).predict(loaded, datamodule=predict_data(photos, val_ratio=0.3))
    from_cli, from_python = pd.read_csv(cli_output), pd.read_csv(writer.path)
    assert len(from_python) == 5 and from_python["confidence"].between(0, 1).all()
    pd.testing.assert_frame_equal(from_python, from_cli)


def test_photos_answered_new_are_grouped_into_proposed_individuals(photos, tmp_path):
    new = tmp_path / "new"
    shutil.copytree(photos / "new", new)
    shutil.copy(new / "unseen0.jpg", new / "unseen0_again.jpg")  # two photos of one new animal, cosine 1
    data = ReIDDataModule(root=str(photos / "data"), metadata="known.csv", image_size=32, batch_size=4,
                          predict_dir=str(new))
    model = ReIDModule(backbone="torch.nn.Flatten", pretrained=False, open_set_threshold=0.999,
                       discovery_threshold=0.999)
    writer = PredictionWriter(output=str(tmp_path / "out" / "predictions.csv"))
    trainer(tmp_path, writer).predict(model, datamodule=data)
    frame = writer.predictions.set_index("image_id")
    # known answers keep their identity; new photos get new_001 (the largest group: the two copies) ...
    assert frame.loc["a.jpg", "proposed_identity"] == frame.loc["a.jpg", "identity"] == "ind_000"
    assert frame.loc["unseen0.jpg", "proposed_identity"] == frame.loc["unseen0_again.jpg", "proposed_identity"]
    assert frame.loc["unseen0.jpg", "proposed_identity"] == "new_001"
    others = {frame.loc[name, "proposed_identity"] for name in ("unseen1.jpg", "unseen2.jpg")}
    assert others == {"new_002", "new_003"}
    assert writer.discovery.num_groups == 3
    assert (tmp_path / "out" / "proposed_individuals.png").stat().st_size > 1000


def test_linked_photos_keep_the_path_given(photos, tmp_path):
    archive, new = tmp_path / "camera_archive", tmp_path / "new"
    archive.mkdir()
    new.mkdir()
    shutil.copy(photos / "data" / "images" / "ind_002" / "001.jpg", archive / "IMG_0042.jpg")
    (new / "zebra_at_dawn.jpg").symlink_to(archive / "IMG_0042.jpg")
    data = ReIDDataModule(root=str(photos / "data"), metadata="known.csv", image_size=32, predict_dir=str(new))
    writer = PredictionWriter(output=str(tmp_path / "predictions.csv"))
    trainer(tmp_path, writer).predict(ReIDModule(backbone="torch.nn.Flatten", pretrained=False,
                                                 open_set_threshold=0.5), datamodule=data)
    row = pd.read_csv(writer.path).iloc[0]
    assert row["path"] == str(new / "zebra_at_dawn.jpg") and row["image_id"] == "zebra_at_dawn.jpg"
    assert row["identity"] == "ind_002"
