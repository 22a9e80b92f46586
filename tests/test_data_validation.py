"""Messy field data: every bad row reported at set-up with its CSV line, the on_bad_image policy, field-photo
decoding, string labels, unknown markers and clear errors for empty CSVs, missing roots and impossible splits."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_lightning.data import ReIDDataModule, load_metadata
from reid_lightning.data import validation as validation_module
from reid_lightning.data.validation import check_images
from reid_lightning.runtime.images import load_rgb

IDENTITIES = ["a", "b", "c"]


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("REID_LIGHTNING_CACHE", str(tmp_path / "cache"))


def solid(path: Path, color=(200, 30, 60), size=(20, 12)) -> str:
    Image.new("RGB", size, color).save(path)
    return path.name


def write_set(root: Path, extra: list[dict] | None = None, per_identity: int = 4) -> Path:
    """Good JPEGs of three identities (CSV lines 2..13), then the ``extra`` rows; returns the CSV path."""
    rows = []
    for identity in IDENTITIES:
        for i in range(per_identity):
            name = solid(root / f"{identity}{i}.jpg", color=(40 * i, 80, 200))
            rows.append({"image_id": f"{identity}{i}", "identity": identity, "path": name})
    rows += extra or []
    csv = root / "metadata.csv"
    pd.DataFrame(rows).to_csv(csv, index=False)
    return csv


def module_with_trainer(root: Path, log_dir: Path, **kwargs) -> ReIDDataModule:
    module = ReIDDataModule(root=str(root), image_size=16, batch_size=2, val_ratio=0.0, **kwargs)
    module.trainer = L.Trainer(logger=False, default_root_dir=log_dir, accelerator="cpu", enable_progress_bar=False)
    return module


@pytest.fixture
def broken_set(tmp_path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    solid(root / "whole.jpg")
    data = (root / "whole.jpg").read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "empty.jpg").write_bytes(b"")
    extra = [
        {"image_id": "t", "identity": "a", "path": "truncated.jpg"},  # line 14
        {"image_id": "e", "identity": "b", "path": "empty.jpg"},  # line 15
        {"image_id": "m", "identity": "c", "path": "missing.jpg"},  # line 16
    ]
    write_set(root, extra)
    return root


def test_every_bad_image_is_reported_at_once_with_its_line(broken_set, tmp_path):
    module = module_with_trainer(broken_set, tmp_path / "logs")
    with pytest.raises(ValueError) as error:
        module.setup("fit")
    message = str(error.value)
    assert "metadata.csv" in message and "3 of 15 images cannot be used" in message
    assert "line 14" in message and "truncated.jpg" in message and "cannot be decoded" in message
    assert "line 15" in message and "empty.jpg" in message and "empty file (0 bytes)" in message
    assert "line 16" in message and "missing.jpg" in message and "not found" in message
    assert "on_bad_image skip" in message
    assert not (tmp_path / "logs").exists() or not list((tmp_path / "logs").iterdir())


def test_skip_policy_drops_the_rows_and_lists_them(broken_set, tmp_path, capsys):
    module = module_with_trainer(broken_set, tmp_path / "logs", on_bad_image="skip")
    with pytest.warns(UserWarning, match="these 3 rows are left out"):
        module.setup("fit")
    kept = pd.concat(module.dataset(split).metadata for split in ("train", "val", "test"))
    assert len(kept) == 12 and not set(kept["image_id"]) & {"t", "e", "m"}
    skipped = pd.read_csv(tmp_path / "logs" / "skipped_images.csv")
    assert skipped["line"].tolist() == [14, 15, 16]
    assert [Path(p).name for p in skipped["path"]] == ["truncated.jpg", "empty.jpg", "missing.jpg"]
    assert "3 rows with unusable images skipped" in capsys.readouterr().out
    # the loaders never meet a bad file
    for batch in module.train_dataloader():
        assert batch["image"].shape[1:] == (3, 16, 16)


def test_check_is_cached_by_size_and_mtime(broken_set, monkeypatch):
    df = load_metadata(broken_set / "metadata.csv", broken_set, check_files=False)
    first = check_images(df, broken_set, progress=False)
    calls = []
    original = validation_module.check_image_file
    monkeypatch.setattr(validation_module, "check_image_file", lambda path: calls.append(path) or original(path))
    again = check_images(df, broken_set, progress=False)
    pd.testing.assert_frame_equal(first, again)
    # only files without a cached result: the missing and the empty one (never cached: they may appear later)
    assert sorted(Path(p).name for p in calls) == ["empty.jpg", "missing.jpg"]
    calls.clear()
    os.utime(broken_set / "a0.jpg", ns=(1, 1))
    check_images(df, broken_set, progress=False)
    assert "a0.jpg" in [Path(p).name for p in calls]


def test_unwritable_cache_only_warns(broken_set, tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # a file where the cache folder should be: nothing can be written under it
    monkeypatch.setenv("REID_LIGHTNING_CACHE", str(blocker))
    df = load_metadata(broken_set / "metadata.csv", broken_set, check_files=False)
    with pytest.warns(UserWarning, match="cache not written"):
        bad = check_images(df, broken_set, progress=False)
    assert len(bad) == 3


# ----------------------------------------------------------------------------------------------- decoding
def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 257 * 100, 65535, 257 * 7]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = load_rgb(tmp_path / "deep.png")
    assert image.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(image)[0, :, 0], [0, 100, 255, 7])


def test_exif_orientation_is_applied(tmp_path):
    pixels = np.zeros((10, 20, 3), np.uint8)
    pixels[:, :10] = (255, 0, 0)  # stored: left half red, right half blue
    pixels[:, 10:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise: the left half ends up on top
    Image.fromarray(pixels).save(tmp_path / "phone.jpg", exif=exif, quality=95)
    image = np.asarray(load_rgb(tmp_path / "phone.jpg")).astype(int)
    assert image.shape == (20, 10, 3)
    assert image[2, 5, 0] > 200 and image[2, 5, 2] < 60  # top: red
    assert image[17, 5, 2] > 200 and image[17, 5, 0] < 60  # bottom: blue


def test_cmyk_palette_and_transparency(tmp_path):
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(tmp_path / "cmyk.tif")
    assert np.asarray(load_rgb(tmp_path / "cmyk.tif"))[0, 0].tolist() == [255, 0, 0]

    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 200, 30] + [0, 0, 0] * 254)
    palette.save(tmp_path / "palette.png")
    assert np.asarray(load_rgb(tmp_path / "palette.png"))[0, 0].tolist() == [10, 200, 30]
    palette.save(tmp_path / "palette_transparent.png", transparency=1)
    assert np.asarray(load_rgb(tmp_path / "palette_transparent.png"))[0, 0].tolist() == [128, 128, 128]

    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (255, 0, 0, 0)  # fully transparent: the grey background
    rgba[0, 1] = (255, 0, 0, 255)  # opaque: itself
    rgba[1, 0] = (255, 0, 0, 128)  # half: 255 * 128/255 + 128 * 127/255 = 191.75
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    out = np.asarray(load_rgb(tmp_path / "rgba.png")).astype(int)
    assert out[0, 0].tolist() == [128, 128, 128] and out[0, 1].tolist() == [255, 0, 0]
    assert abs(out[1, 0, 0] - 192) <= 1 and abs(out[1, 0, 1] - 64) <= 1

    Image.fromarray(np.dstack([np.full((2, 2), 90, np.uint8), np.zeros((2, 2), np.uint8)])).save(
        tmp_path / "la.png")
    assert np.asarray(load_rgb(tmp_path / "la.png"))[0, 0].tolist() == [128, 128, 128]


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_decodable_odd_modes_are_kept_under_both_policies(tmp_path, policy):
    root = tmp_path / "data"
    root.mkdir()
    Image.fromarray(np.full((12, 20), 40000, np.uint16)).save(root / "deep.png")
    Image.new("CMYK", (20, 12), (0, 255, 255, 0)).save(root / "cmyk.jpg")
    Image.new("RGBA", (20, 12), (1, 2, 3, 0)).save(root / "rgba.png")
    extra = [{"image_id": name, "identity": "a", "path": name} for name in ("deep.png", "cmyk.jpg", "rgba.png")]
    write_set(root, extra)
    module = module_with_trainer(root, tmp_path / "logs", on_bad_image=policy, test_ratio=0.0)
    module.setup("fit")
    assert len(module.split_data.skipped) == 0 and len(module.dataset("train")) == 15


# ----------------------------------------------------------------------------------------------- bbox
def bbox_set(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    root.mkdir()
    solid(root / "frame.jpg", size=(20, 12))
    extra = [
        {"image_id": "out", "identity": "a", "path": "frame.jpg", "bbox": "[100, 100, 10, 10]"},  # line 14
        {"image_id": "edge", "identity": "a", "path": "frame.jpg", "bbox": "[15, 5, 10, 10]"},  # line 15
    ]
    write_set(root, extra)
    return root


def test_bbox_outside_the_image_is_a_bad_row(tmp_path):
    root = bbox_set(tmp_path)
    with pytest.raises(ValueError, match=r"row 12 \(line 14\): '.*frame.jpg': bbox \[100.0, 100.0, 10.0, 10.0\] "
                                         r"does not overlap the 20x12 image"):
        module_with_trainer(root, tmp_path / "logs").setup("fit")


def test_bbox_crops_by_default_and_is_clipped_with_a_warning(tmp_path):
    root = bbox_set(tmp_path)
    module = module_with_trainer(root, tmp_path / "logs", on_bad_image="skip", test_ratio=0.0)
    with pytest.warns(UserWarning, match=r"1 bounding boxes reach outside .*line 15"):
        module.setup("fit")
    assert module.split_data.skipped["line"].tolist() == [14]
    train = module.dataset("train")
    train.transform = None
    edge = int(np.flatnonzero(train.metadata["image_id"] == "edge")[0])
    assert train.get_image(edge).size == (5, 7)  # [15, 5, 10, 10] clipped to 20 x 12
    full = int(np.flatnonzero(train.metadata["image_id"] == "a0")[0])  # empty bbox: the full image
    assert train.get_image(full).size == (20, 12)


# ----------------------------------------------------------------------------------------------- labels
def test_identities_are_strings(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rows = [{"image_id": f"0{i}", "identity": "007", "path": solid(root / f"x{i}.jpg")} for i in range(3)]
    rows += [{"image_id": str(i), "identity": "7", "path": solid(root / f"y{i}.jpg")} for i in range(3)]
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    df = load_metadata(root / "metadata.csv", root)
    assert df["identity"].tolist() == ["007"] * 3 + ["7"] * 3
    assert df["image_id"].tolist() == ["00", "01", "02", "0", "1", "2"]  # "01" and "1" are not duplicates
    module = ReIDDataModule(root=str(root), test_ratio=0.0, val_ratio=0.0, image_size=16)
    module.setup()
    assert module.class_names == ["007", "7"]


def test_unknown_markers_ignore_case_and_spaces(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    extra = [{"image_id": f"u{i}", "identity": name, "path": solid(root / f"u{i}.jpg")}
             for i, name in enumerate(["Unknown ", "UNKNOWN", " unknown", "unidentified"])]
    write_set(root, extra)
    module = module_with_trainer(root, tmp_path / "logs")
    module.setup("fit")
    assert module.num_classes == 4  # a, b, c and the one "unidentified" animal: not a marker by default
    assert "unknown identity: 3 rows" in capsys.readouterr().out

    custom = module_with_trainer(root, tmp_path / "logs2", unknown_markers=("unknown", "Unidentified"))
    custom.setup("fit")
    assert custom.num_classes == 3
    assert (custom.split_data.images.labels < 0).sum() == 4


# ----------------------------------------------------------------------------------------------- clear errors
def test_empty_csv_names_the_file(tmp_path):
    (tmp_path / "metadata.csv").write_text("")
    with pytest.raises(ValueError, match=r"metadata '.*metadata.csv' is empty"):
        ReIDDataModule(root=str(tmp_path)).setup()
    (tmp_path / "metadata.csv").write_text("image_id,identity,path\n")
    with pytest.raises(ValueError, match=r"metadata '.*metadata.csv' has no rows"):
        ReIDDataModule(root=str(tmp_path)).setup()


def test_missing_root_is_named_and_the_current_folder_is_not_read(tmp_path, monkeypatch):
    write_set(tmp_path)  # a metadata.csv in the current folder must not be picked up instead
    monkeypatch.chdir(tmp_path)
    for metadata in (None, "metadata.csv"):
        with pytest.raises(FileNotFoundError, match=r"data root '.*nowhere' \(--data.root\) is not a folder"):
            ReIDDataModule(root=str(tmp_path / "nowhere"), metadata=metadata).setup()


def test_open_split_that_would_be_closed_is_refused(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    rows = [{"image_id": f"{n}{i}", "identity": n, "path": solid(root / f"{n}{i}.jpg")} for n in "ab" for i in range(4)]
    pd.DataFrame(rows).to_csv(root / "metadata.csv", index=False)
    with pytest.raises(ValueError, match=r"split 'open': with 2 identities and open_ratio=0.2, no identity is held "
                                         r"out for testing only \(round\(2 x 0.2\) = 0"):
        ReIDDataModule(root=str(root), split="open", image_size=16).setup()
    with pytest.raises(ValueError, match=r"split 'disjoint': 2 identities, 1 left after holding out the test "
                                         r"identities.*val_ratio=0 or at least 3 identities"):
        ReIDDataModule(root=str(root), split="disjoint", val_ratio=0.1, image_size=16).setup()
    module = ReIDDataModule(root=str(root), split="disjoint", val_ratio=0.0, image_size=16)
    module.setup()
    assert module.num_classes == 1


# ----------------------------------------------------------------------------------------------- summary
def test_every_run_prints_and_writes_the_split_summary(tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    write_set(root, [{"image_id": "solo", "identity": "d", "path": solid(root / "solo.jpg")}])
    module = module_with_trainer(root, tmp_path / "logs")
    module.setup("fit")
    written = (tmp_path / "logs" / "data_summary.txt").read_text()
    assert written.strip() == module.summary()
    assert module.summary() in capsys.readouterr().out
    train_line = module.summary().splitlines()[1].split()
    # "d" has one image, so it stays in training: a single-image identity there
    assert train_line[0] == "train" and train_line[3] == "1"
    assert "without their identity in the gallery" in written
