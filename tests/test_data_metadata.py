"""Metadata loading and validation: every bad input names file, row and column."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from reid_lightning.data import from_wildlife_datasets, load_metadata, parse_bbox


def write_set(root: Path, num_images: int = 4) -> pd.DataFrame:
    (root / "img").mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(root / "img" / f"{i}.png")
    return pd.DataFrame({
        "image_id": [f"id{i}" for i in range(num_images)],
        "identity": ["x", "y", "unknown", "x"][:num_images],
        "path": [f"img/{i}.png" for i in range(num_images)],
        "bbox": ["[0, 0, 4, 4]", [1, 1, 2, 3], None, "(1.5, 2, 3, 4)"][:num_images],
        "date": ["2021-06-30", "2021-07-01 12:30:00", None, "2022-01-05"][:num_images],
    })


def test_valid_csv_relative_to_root_is_parsed(tmp_path):
    df = write_set(tmp_path)
    df.to_csv(tmp_path / "meta.csv", index=False)
    loaded = load_metadata("meta.csv", tmp_path)
    assert loaded["identity"].tolist() == ["x", "y", "unknown", "x"]
    assert loaded["bbox"].tolist() == [[0, 0, 4, 4], [1, 1, 2, 3], None, [1.5, 2, 3, 4]]
    assert loaded["date"].tolist()[:2] == [pd.Timestamp("2021-06-30"), pd.Timestamp("2021-07-01 12:30")]
    assert pd.isna(loaded["date"].iloc[2])
    assert load_metadata(tmp_path / "meta.csv", tmp_path)["image_id"].tolist() == df["image_id"].tolist()


def test_dataframe_input_is_copied_not_mutated(tmp_path):
    df = write_set(tmp_path)
    df.index = [10, 11, 12, 13]
    original = df.copy()
    loaded = load_metadata(df, tmp_path)
    pd.testing.assert_frame_equal(df, original)
    assert loaded is not df and list(loaded.index) == [0, 1, 2, 3]
    loaded.loc[0, "identity"] = "changed"
    assert df.loc[10, "identity"] == "x"


def test_identities_become_strings(tmp_path):
    df = write_set(tmp_path).assign(identity=[3, 10, 3, 2])
    assert load_metadata(df, tmp_path)["identity"].tolist() == ["3", "10", "3", "2"]


def test_missing_required_column(tmp_path):
    df = write_set(tmp_path).drop(columns="identity")
    with pytest.raises(ValueError, match=r"missing required column\(s\) \['identity'\]"):
        load_metadata(df, tmp_path)


@pytest.mark.parametrize("empty", [None, "", "   "])
def test_empty_identity_names_row_and_csv_line(tmp_path, empty):
    df = write_set(tmp_path)
    df.loc[2, "identity"] = empty
    df.to_csv(tmp_path / "meta.csv", index=False)
    with pytest.raises(ValueError, match=r"meta.csv.*column 'identity' is empty in row 2 \(line 4\)"):
        load_metadata("meta.csv", tmp_path)


def test_duplicate_image_id(tmp_path):
    df = write_set(tmp_path)
    df.loc[3, "image_id"] = "id1"
    message = r"'image_id' has duplicates in row 1, row 3 \(values \['id1', 'id1'\]\)"
    with pytest.raises(ValueError, match=message):
        load_metadata(df, tmp_path)


def test_missing_image_files_listed_with_rows_and_hint(tmp_path):
    df = write_set(tmp_path)
    (tmp_path / "img" / "1.png").unlink()
    (tmp_path / "img" / "3.png").unlink()
    with pytest.raises(ValueError, match=r"2 of 4 image files not found") as error:
        load_metadata(df, tmp_path)
    message = str(error.value)
    assert f"row 1: '{tmp_path / 'img/1.png'}'" in message and "row 3" in message
    assert "root=" in message and "'path' column" in message
    assert load_metadata(df, tmp_path, check_files=False)["path"].tolist() == df["path"].tolist()


def test_paths_checked_against_root(tmp_path):
    df = write_set(tmp_path)
    with pytest.raises(ValueError, match="4 of 4 image files not found"):
        load_metadata(df, tmp_path / "elsewhere")


@pytest.mark.parametrize(
    ("bbox", "reason"),
    [
        ("[1, 2, 3]", "four finite numbers"),
        ("box", "cannot parse"),
        ("[1, 2, 0, 4]", "non-positive width or height"),
        ([1, "a", 2, 3], "not a list of numbers"),
    ],
)
def test_malformed_bbox(tmp_path, bbox, reason):
    df = write_set(tmp_path)
    df.at[1, "bbox"] = bbox
    with pytest.raises(ValueError, match=rf"column 'bbox', row 1: .*{reason}"):
        load_metadata(df, tmp_path)


def test_unparseable_date(tmp_path):
    df = write_set(tmp_path)
    df.loc[3, "date"] = "yesterday"
    df.to_csv(tmp_path / "meta.csv", index=False)
    message = r"column 'date' cannot be parsed in row 3 \(line 5\) \(values \['yesterday'\]\)"
    with pytest.raises(ValueError, match=message):
        load_metadata(tmp_path / "meta.csv", tmp_path)


def test_missing_csv_and_wrong_type(tmp_path):
    with pytest.raises(FileNotFoundError, match="metadata CSV not found"):
        load_metadata("nope.csv", tmp_path)
    with pytest.raises(TypeError, match="CSV path or a pandas DataFrame"):
        load_metadata(np.zeros(3), tmp_path)


def test_parse_bbox_forms():
    assert parse_bbox("[1, 2, 3, 4]") == [1.0, 2.0, 3.0, 4.0]
    assert parse_bbox((1, 2, 3, 4)) == [1.0, 2.0, 3.0, 4.0]
    assert parse_bbox(np.array([1, 2, 3, 4])) == [1.0, 2.0, 3.0, 4.0]
    assert parse_bbox(float("nan")) is None and parse_bbox("") is None and parse_bbox(None) is None


class FakeWildlifeDataset:
    """Stands in for a wildlife-datasets dataset class (the package is optional)."""

    def __init__(self, root: str) -> None:
        self.root = root
        self.df = pd.DataFrame({"image_id": [1], "identity": ["a"], "path": [f"{root}/a.jpg"]})


def test_from_wildlife_datasets_object_and_class_name(monkeypatch):
    dataset = FakeWildlifeDataset("data")
    frame = from_wildlife_datasets(dataset)
    pd.testing.assert_frame_equal(frame, dataset.df)
    assert frame is not dataset.df

    package = types.ModuleType("wildlife_datasets")
    datasets = types.ModuleType("wildlife_datasets.datasets")
    datasets.MacaqueFaces = FakeWildlifeDataset
    monkeypatch.setitem(sys.modules, "wildlife_datasets", package)
    monkeypatch.setitem(sys.modules, "wildlife_datasets.datasets", datasets)
    assert from_wildlife_datasets("MacaqueFaces", "data/Macaque")["path"].tolist() == ["data/Macaque/a.jpg"]
    with pytest.raises(ValueError, match="no dataset class 'Zebras'"):
        from_wildlife_datasets("Zebras", "data")


def test_from_wildlife_datasets_without_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "wildlife_datasets", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install wildlife-datasets"):
        from_wildlife_datasets("MacaqueFaces", "data")
    with pytest.raises(TypeError, match="no 'df' or 'metadata' DataFrame"):
        from_wildlife_datasets(object())
