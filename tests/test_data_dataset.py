"""ImageDataset (wildlife-tools compatible) and transforms."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from sklearn.neighbors import KNeighborsClassifier
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD

from reid_lightning.data import ImageDataset, build_transforms
from reid_lightning.inference.knn import KnnClassifier
from reid_lightning.similarity.cosine import CosineSimilarity


def gradient(width: int = 20, height: int = 12) -> np.ndarray:
    """(H, W, 3) uint8 image whose pixels encode their own coordinates."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 10, y * 20, np.full_like(x, 7)], axis=-1).astype(np.uint8)


@pytest.fixture
def image_set(tmp_path: Path) -> pd.DataFrame:
    Image.fromarray(gradient()).save(tmp_path / "rgb.png")
    Image.fromarray(gradient()[..., 0]).save(tmp_path / "gray.png")  # mode L
    Image.fromarray(np.dstack([gradient(), np.full((12, 20), 255, np.uint8)])).save(tmp_path / "rgba.png")
    return pd.DataFrame({
        "image_id": [1, 2, 3, 4],
        "identity": ["zebra", "ant", "unknown", "zebra"],
        "path": ["rgb.png", "gray.png", "rgba.png", "rgb.png"],
        "bbox": [[2, 3, 10, 5], "[0, 0, 4, 4]", None, "[5, 1, 3, 8]"],
    })


def test_items_labels_and_rgb_loading(tmp_path, image_set):
    dataset = ImageDataset(image_set, tmp_path)
    assert len(dataset) == 4
    assert dataset.labels.tolist() == [1, 0, -1, 1]  # sorted names; unknown negative
    assert dataset.labels_string.tolist() == ["zebra", "ant", "unknown", "zebra"]
    assert dataset.labels_map == {0: "ant", 1: "zebra", -1: "unknown"}
    assert dataset.num_classes == 2
    image, label = dataset[0]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and label == 1
    np.testing.assert_array_equal(np.asarray(image), gradient())
    gray, _ = dataset[1]
    assert gray.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(gray)[..., 1], gradient()[..., 0])
    assert dataset[2][0].mode == "RGB"
    assert isinstance(ImageDataset(image_set, tmp_path, load_label=False)[0], Image.Image)


def test_seed_style_knn_with_labels_string(tmp_path, image_set):
    # the seed's usage: k-NN over embeddings of a database subset, predictions compared to labels_string
    dataset = ImageDataset(image_set, tmp_path, transform=T.Compose([T.Resize((12, 20)), T.ToTensor()]))
    database, query = dataset.get_subset([0, 1, 2]), dataset.get_subset([3, 1])
    embed = lambda subset: torch.stack([subset[i][0].flatten() for i in range(len(subset))])
    similarity = CosineSimilarity()(embed(query), embed(database))
    predictions = KnnClassifier(database.labels_string, k=1)(similarity)
    reference = KNeighborsClassifier(n_neighbors=1, metric="cosine").fit(embed(database), database.labels_string)
    np.testing.assert_array_equal(predictions, reference.predict(embed(query)))
    assert np.mean(query.labels_string == predictions) == 1.0


def test_bbox_crop(tmp_path, image_set):
    dataset = ImageDataset(image_set, tmp_path, img_load="bbox")
    crop, _ = dataset[0]
    assert crop.size == (10, 5)
    np.testing.assert_array_equal(np.asarray(crop), gradient()[3:8, 2:12])
    assert dataset[1][0].size == (4, 4)
    assert dataset[2][0].size == (20, 12)  # no box: the full image
    assert dataset[3][0].size == (3, 8)


def test_transform_is_settable(tmp_path, image_set):
    dataset = ImageDataset(image_set, tmp_path)
    dataset.transform = T.ToTensor()
    image, _ = dataset[0]
    assert isinstance(image, torch.Tensor) and image.shape == (3, 12, 20)
    assert torch.allclose(image[0, 0, :3], torch.tensor([0.0, 10, 20]) / 255)


def test_get_subset_is_independent_and_keeps_codes(tmp_path, image_set):
    dataset = ImageDataset(image_set, tmp_path)
    subset = dataset.get_subset([3, 2])
    assert subset is not dataset and len(subset) == 2
    assert subset.labels.tolist() == [1, -1]  # the parent's codes, not re-factorised
    assert subset.labels_string.tolist() == ["zebra", "unknown"]
    assert subset.metadata["image_id"].tolist() == [4, 3] and list(subset.metadata.index) == [0, 1]
    subset.transform = T.ToTensor()
    subset.labels[0] = 99
    assert dataset.transform is None and dataset.labels[3] == 1 and len(dataset) == 4
    masked = dataset.get_subset(np.array([True, False, False, True]))
    assert masked.metadata["image_id"].tolist() == [1, 4]
    with pytest.raises(ValueError, match="boolean mask has 2 entries"):
        dataset.get_subset(np.array([True, False]))


def test_metadata_is_not_mutated(tmp_path, image_set):
    image_set.index = [7, 8, 9, 10]
    original = image_set.copy()
    ImageDataset(image_set, tmp_path).get_subset([0])
    pd.testing.assert_frame_equal(image_set, original)


def test_clear_errors(tmp_path, image_set):
    broken = image_set.assign(path=["rgb.png", "missing.png", "rgb.png", "rgb.png"])
    with pytest.raises(OSError, match=r"cannot open image '.*missing.png' \(metadata row 1\)"):
        ImageDataset(broken, tmp_path)[1]
    # a subset names the row of the full metadata, not its own position
    with pytest.raises(OSError, match=r"missing.png' \(metadata row 1\)"):
        ImageDataset(broken, tmp_path).get_subset([3, 1])[1]
    with pytest.raises(ValueError, match="img_load='mask'"):
        ImageDataset(image_set, tmp_path, img_load="mask")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['bbox'\]"):
        ImageDataset(image_set.drop(columns="bbox"), tmp_path, img_load="bbox")
    with pytest.raises(ValueError, match=r"lacks column\(s\) \['name'\]"):
        ImageDataset(image_set, tmp_path, col_label="name")


def test_eval_transform_resizes_and_normalises():
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    transform = build_transforms(image_size=(6, 10), mean=mean, std=std, train=False)
    image = Image.new("RGB", (40, 30), (51, 102, 204))
    out = transform(image)
    assert out.shape == (3, 6, 10)
    expected = (torch.tensor([51, 102, 204]) / 255 - torch.tensor(mean)) / torch.tensor(std)
    assert torch.allclose(out[:, 0, 0], expected, atol=1e-6) and torch.allclose(out.mean((1, 2)), expected)
    assert build_transforms(image_size=8, mean=mean, std=std, train=False)(image).shape == (3, 8, 8)


def test_train_transform_steps():
    kwargs = {"image_size": 16, "mean": IMAGENET_DEFAULT_MEAN, "std": IMAGENET_DEFAULT_STD, "train": True}
    steps = [type(step) for step in build_transforms(**kwargs).transforms]
    assert steps == [T.RandomResizedCrop, T.RandAugment, T.ToTensor, T.Normalize]  # no flip by default
    randaugment = build_transforms(**kwargs, randaugment_num_ops=3, randaugment_magnitude=5).transforms[1]
    assert (randaugment.num_ops, randaugment.magnitude) == (3, 5)
    plain = build_transforms(**kwargs, hflip=True, randaugment=False, crop_scale=None)
    steps = [type(step) for step in plain.transforms]
    assert steps == [T.Resize, T.RandomHorizontalFlip, T.ToTensor, T.Normalize]
    torch.manual_seed(0)
    out = build_transforms(**kwargs)(Image.fromarray(gradient()))
    assert out.shape == (3, 16, 16) and out.dtype == torch.float32


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"image_size": 0}, "image_size"),
        ({"mean": (0.5, 0.5)}, "mean must have 3 values"),
        ({"std": (0.5, 0.0, 0.5)}, "std must be positive"),
        ({"crop_scale": (0.9, 0.5)}, "crop_scale"),
    ],
)
def test_transform_argument_errors(kwargs, message):
    arguments = {"image_size": 8, "mean": (0.5,) * 3, "std": (0.5,) * 3, "train": True, **kwargs}
    with pytest.raises(ValueError, match=message):
        build_transforms(**arguments)
