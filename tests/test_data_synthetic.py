"""Synthetic individuals: deterministic, cached, valid metadata, identities distinct but not trivially."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from reid_lightning.data import load_metadata, make_synthetic_individuals, split_metadata
from reid_lightning.data.synthetic import main

TINY = {"num_individuals": 4, "images_per_individual": 3, "image_size": 32}


def pixels(root: Path, metadata: pd.DataFrame) -> np.ndarray:
    return np.stack([np.asarray(Image.open(root / path)) for path in metadata["path"]])


def test_writes_valid_metadata_and_images(tmp_path):
    csv = make_synthetic_individuals(tmp_path, **TINY)
    assert csv == tmp_path / "metadata.csv"
    metadata = load_metadata(csv, tmp_path)  # all validations pass, every file exists
    assert list(metadata.columns) == ["image_id", "identity", "path", "date"]
    assert len(metadata) == 12 and metadata["identity"].nunique() == 4
    assert metadata.groupby("identity").size().tolist() == [3, 3, 3, 3]
    assert metadata["date"].notna().all()
    images = pixels(tmp_path, metadata)
    assert images.shape == (12, 32, 32, 3) and images.dtype == np.uint8
    splits = split_metadata(metadata, "time", test_ratio=0.34, val_ratio=0.0)  # dates allow a time split
    assert len(splits["test"]) == 4


def test_deterministic_from_seed(tmp_path):
    first = make_synthetic_individuals(tmp_path / "a", **TINY, seed=5)
    second = make_synthetic_individuals(tmp_path / "b", **TINY, seed=5)
    other = make_synthetic_individuals(tmp_path / "c", **TINY, seed=6)
    frames = [pd.read_csv(p) for p in (first, second, other)]
    pd.testing.assert_frame_equal(frames[0], frames[1])
    np.testing.assert_array_equal(pixels(tmp_path / "a", frames[0]), pixels(tmp_path / "b", frames[1]))
    assert not np.array_equal(pixels(tmp_path / "a", frames[0]), pixels(tmp_path / "c", frames[2]))


def test_individual_images_do_not_depend_on_the_set_size(tmp_path):
    small = make_synthetic_individuals(tmp_path / "s", num_individuals=2, images_per_individual=2)
    large = make_synthetic_individuals(tmp_path / "l", num_individuals=3, images_per_individual=3)
    small_frame, large_frame = pd.read_csv(small), pd.read_csv(large)
    shared = large_frame[large_frame["image_id"].isin(small_frame["image_id"])]
    np.testing.assert_array_equal(pixels(tmp_path / "s", small_frame), pixels(tmp_path / "l", shared))


def test_cached_when_complete_regenerated_otherwise(tmp_path):
    csv = make_synthetic_individuals(tmp_path, **TINY)
    params = json.loads((tmp_path / "synthetic.json").read_text())
    assert params["num_individuals"] == 4 and params["seed"] == 0
    image = tmp_path / pd.read_csv(csv)["path"].iloc[0]
    stamp = image.stat().st_mtime_ns
    assert make_synthetic_individuals(tmp_path, **TINY) == csv
    assert image.stat().st_mtime_ns == stamp  # reused, not rewritten

    image.unlink()  # incomplete: regenerated
    make_synthetic_individuals(tmp_path, **TINY)
    assert image.is_file()

    make_synthetic_individuals(tmp_path, **{**TINY, "num_individuals": 2})  # other parameters
    assert len(pd.read_csv(csv)) == 6
    assert json.loads((tmp_path / "synthetic.json").read_text())["num_individuals"] == 2
    assert not (tmp_path / "images" / "ind_003").exists()  # the old set's images were removed


def test_identities_are_distinct_but_not_trivial(tmp_path):
    """Raw-pixel nearest neighbours re-identify far above chance, yet far from perfectly."""
    csv = make_synthetic_individuals(tmp_path, num_individuals=10, images_per_individual=6, image_size=48)
    metadata = pd.read_csv(csv)
    features = pixels(tmp_path, metadata).reshape(len(metadata), -1).astype(np.float64)
    features -= features.mean(axis=0)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    scores = features @ features.T
    labels = metadata["identity"].to_numpy()
    same = labels[:, None] == labels[None, :]
    np.fill_diagonal(same, False)
    different = labels[:, None] != labels[None, :]
    assert scores[same].mean() > scores[different].mean() + 0.05
    np.fill_diagonal(scores, -np.inf)
    top1 = np.mean(labels[scores.argmax(axis=1)] == labels)
    assert 2 * 0.1 < top1 < 0.9


def test_command_line_entry(tmp_path, capsys):
    main(["--root", str(tmp_path), "--num-individuals", "2", "--images-per-individual", "2",
          "--image-size", "24"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "metadata.csv")
    assert len(pd.read_csv(tmp_path / "metadata.csv")) == 4
