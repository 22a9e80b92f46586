"""Local feature extractors, the LocalFeatures container and the feature disk cache (tiny CPU images)."""

from __future__ import annotations

import kornia
import pytest
import torch
from helpers import Items, needs_shipped, single_thread  # noqa: F401 (autouse fixture)
from PIL import Image

from reid_lightning.features import (
    AlikedExtractor,
    DiskExtractor,
    LocalFeatures,
    SiftExtractor,
    SuperPointExtractor,
    SuperPointNet,
)
from reid_lightning.features.superpoint import sample_descriptors


def pattern(seed: int, height: int = 96, width: int = 96) -> torch.Tensor:
    """Random blurred rectangles: a textured RGB image in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(3, height, width)
    for _ in range(20):
        x = int(torch.randint(0, width - 12, (1,), generator=generator))
        y = int(torch.randint(0, height - 12, (1,), generator=generator))
        w, h = torch.randint(5, 20, (2,), generator=generator).tolist()
        image[:, y : y + h, x : x + w] = torch.rand(3, 1, 1, generator=generator)
    return kornia.filters.gaussian_blur2d(image[None], (5, 5), (1.0, 1.0))[0].clamp(0, 1)



def superpoint_weights(tmp_path, seed: int = 0):
    """Random SuperPoint weights saved in the official ``superpoint_v1.pth`` key layout."""
    torch.manual_seed(seed)
    state_dict = SuperPointNet().state_dict()
    path = tmp_path / "superpoint_v1.pth"
    torch.save(state_dict, path)
    return path, state_dict


# --- LocalFeatures ------------------------------------------------------------------------------------------


def make_features(n: int = 4, k: int = 5) -> LocalFeatures:
    counts = torch.arange(n) % (k + 1)
    mask = torch.arange(k)[None] < counts[:, None]
    return LocalFeatures(
        keypoints=torch.rand(n, k, 2) * mask[..., None],
        descriptors=torch.rand(n, k, 3),
        scores=torch.rand(n, k),
        mask=mask,
        image_sizes=torch.tensor([[64, 48]] * n),
        extractor="test",
        config_key="test|k=5",
    )


def test_local_features_index_and_cat_keep_rows():
    features = make_features()
    picked = features[torch.tensor([3, 1])]
    assert torch.equal(picked.keypoints, features.keypoints[[3, 1]])
    assert torch.equal(picked.num_keypoints, torch.tensor([3, 1]))
    assert len(features[2]) == 1 and torch.equal(features[2].descriptors[0], features.descriptors[2])
    joined = LocalFeatures.cat([features[:2], features[2:]])
    assert torch.equal(joined.scores, features.scores) and joined.config_key == features.config_key


def test_local_features_reject_bad_shapes_and_mixed_configs():
    features = make_features()
    with pytest.raises(ValueError, match="descriptors"):
        LocalFeatures(**{**features.__dict__, "descriptors": torch.rand(3, 5, 3)})
    padding_first = features.mask.clone()
    padding_first[1] = torch.tensor([False, True, False, False, False])
    with pytest.raises(ValueError, match="first"):
        LocalFeatures(**{**features.__dict__, "mask": padding_first})
    other = LocalFeatures(**{**features.__dict__, "config_key": "other"})
    with pytest.raises(ValueError, match="different extractor configurations"):
        LocalFeatures.cat([features, other])


# --- SuperPoint ---------------------------------------------------------------------------------------------


def test_superpoint_loads_official_key_layout(tmp_path):
    path, state_dict = superpoint_weights(tmp_path)
    assert list(state_dict)[:2] == ["conv1a.weight", "conv1a.bias"] and "convDb.bias" in state_dict
    extractor = SuperPointExtractor(weights=path, device="cpu", progress=False)
    for name, value in extractor.model.state_dict().items():
        assert torch.equal(value, state_dict[name])


def test_superpoint_rejects_foreign_weights(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"encoder.weight": torch.zeros(1)}, path)
    with pytest.raises(ValueError, match="missing"):
        SuperPointExtractor(weights=path, device="cpu")


def test_superpoint_keypoints_are_maxima_with_sampled_descriptors(tmp_path):
    path, _ = superpoint_weights(tmp_path)
    extractor = SuperPointExtractor(
        weights=path, max_num_keypoints=32, nms_radius=2, device="cpu", progress=False
    )
    # 60 x 52 is not a multiple of 8: the network sees a padded image, the keypoints stay inside the real one
    images = [pattern(1, 60, 52), pattern(2, 60, 52)]
    features = extractor(Items(images))
    assert features.keypoints.shape == (2, 32, 2) and features.descriptors.shape == (2, 32, 256)
    assert torch.equal(features.image_sizes, torch.tensor([[52, 60], [52, 60]]))
    gray = kornia.color.rgb_to_grayscale(images[0][None])
    heatmap, dense = extractor.model(torch.nn.functional.pad(gray, (0, 4, 0, 4)))
    heatmap = heatmap[0, :60, :52]
    valid = features.mask[0]
    x, y = features.keypoints[0, valid].long().unbind(-1)
    assert torch.allclose(features.scores[0, valid], heatmap[y, x])
    assert (features.scores[0, valid][:-1] >= features.scores[0, valid][1:]).all()  # strongest first
    pooled = torch.nn.functional.max_pool2d(heatmap[None, None], 5, stride=1, padding=2)[0, 0]
    assert torch.equal(heatmap[y, x], pooled[y, x])  # local maxima within the NMS radius
    assert ((x >= 4) & (x < 48) & (y >= 4) & (y < 56)).all()  # away from the border
    expected = sample_descriptors(dense, features.keypoints[:1, valid])
    assert torch.allclose(features.descriptors[0, valid], expected[0], atol=1e-6)
    assert torch.allclose(
        features.descriptors[0, valid].norm(dim=-1), torch.ones(int(valid.sum())), atol=1e-5
    )


def test_superpoint_descriptor_sampling_follows_the_reference_mapping():
    # reference mapping to cell units: u = (x - 3.5) / (8 w - 4.5) * (w - 1), same for y with h
    dense = torch.nn.functional.normalize(torch.randn(1, 4, 3, 5), dim=1)
    keypoints = torch.tensor(
        [[[3.5, 3.5], [3.5 + 35.5 / 2, 3.5 + 19.5 / 2]]]
    )  # cells (0, 0) and (row 1, col 2)
    sampled = sample_descriptors(dense, keypoints)[0]
    assert torch.allclose(sampled[0], dense[0, :, 0, 0], atol=1e-6)
    assert torch.allclose(sampled[1], dense[0, :, 1, 2], atol=1e-6)


# --- SIFT and dataset handling ------------------------------------------------------------------------------


def test_sift_mixed_sizes_and_gray_input_keep_dataset_order():
    images = [
        pattern(3, 80, 96),
        pattern(4, 64, 64),
        kornia.color.rgb_to_grayscale(pattern(5, 80, 96)[None])[0],
    ]
    extractor = SiftExtractor(max_num_keypoints=64, batch_size=3, device="cpu", progress=False)
    features = extractor(Items(images))
    assert torch.equal(features.image_sizes, torch.tensor([[96, 80], [64, 64], [96, 80]]))
    single = extractor(Items(images[1:2]))
    assert torch.allclose(features[1].keypoints, single.keypoints) and torch.equal(
        features[1].mask, single.mask
    )
    for i, (w, h) in enumerate(features.image_sizes.tolist()):
        valid = features.keypoints[i, features.mask[i]]
        assert len(valid) > 5
        assert (valid >= 0).all() and (valid[:, 0] <= w - 1).all() and (valid[:, 1] <= h - 1).all()
    assert features.scales is not None and (features.scales[features.mask] > 0).all()
    assert (features.orientations.abs() <= torch.pi + 1e-6).all()
    assert (features.descriptors[~features.mask] == 0).all()


def test_extractor_errors_name_the_item_and_the_fix(tmp_path):
    extractor = SiftExtractor(device="cpu", progress=False)
    normalized = (pattern(0) - 0.5) / 0.2
    with pytest.raises(ValueError, match=r"item 1.*T\.Normalize"):
        extractor(Items([pattern(0), normalized]))
    with pytest.raises(TypeError, match=r"item 0.*ToTensor"):
        extractor(Items([Image.new("RGB", (32, 32))]))


def test_cache_hits_by_content_not_by_index(tmp_path):
    path, _ = superpoint_weights(tmp_path)
    extractor = SuperPointExtractor(
        weights=path, max_num_keypoints=16, device="cpu", cache_dir=tmp_path / "cache", progress=False, batch_size=2
    )
    detected = []
    detect = extractor.detect
    extractor.detect = lambda images: detected.append(len(images)) or detect(images)
    images = [pattern(10), pattern(11)]
    first = extractor(Items(images))
    assert detected == [2]
    again = extractor(Items(images))
    assert detected == [2] and torch.equal(again.descriptors, first.descriptors)
    changed = [images[0], pattern(12)]  # same index 1, new content: a miss
    extractor(Items(changed))
    assert detected == [2, 1]
    other_config = SuperPointExtractor(
        weights=path, max_num_keypoints=8, device="cpu", cache_dir=tmp_path / "cache", progress=False
    )
    assert other_config.config_key != extractor.config_key
    assert len(other_config(Items(images))) == 2
    (tmp_path / "other").mkdir()
    other_weights_path, _ = superpoint_weights(tmp_path / "other", seed=1)
    other_weights = SuperPointExtractor(weights=other_weights_path, max_num_keypoints=16, device="cpu")
    assert other_weights.config_key != extractor.config_key


# --- pretrained ALIKED / DISK -------------------------------------------------------------------------------


@needs_shipped
@pytest.mark.parametrize("extractor_class", [AlikedExtractor, DiskExtractor])
def test_pretrained_extractors_find_repeatable_keypoints(extractor_class):
    image = pattern(20, 96, 96)
    shifted = torch.roll(image, shifts=(6, 4), dims=(1, 2))
    extractor = extractor_class(max_num_keypoints=64, device="cpu", progress=False)
    features = extractor(Items([image, shifted]))
    assert extractor.config_key.startswith(extractor.family) and "weights=none" not in extractor.config_key
    assert (features.num_keypoints > 20).all()
    assert torch.allclose(features.descriptors[features.mask].norm(dim=-1), torch.tensor(1.0), atol=1e-4)
    # keypoints of the shifted copy reappear shifted (away from the wrapped border)
    first = features.keypoints[0, features.mask[0]] + torch.tensor([4.0, 6.0])
    second = features.keypoints[1, features.mask[1]]
    inner = ((first > 12) & (first < 84)).all(dim=1)
    nearest = torch.cdist(first[inner], second).min(dim=1).values
    assert (nearest < 1.5).float().mean() > 0.6
