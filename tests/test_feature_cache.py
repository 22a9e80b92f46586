"""The local-feature cache: identical features back, invalidation, cheap file keys, LRU, concurrent writers."""

from __future__ import annotations

import multiprocessing
import os

import pandas as pd
import torch
import torchvision.transforms as T
from helpers import Items, single_thread  # noqa: F401 (autouse fixture)
from PIL import Image
from test_features_local import pattern, superpoint_weights

from reid_lightning.data.dataset import ImageDataset
from reid_lightning.features import FeatureCache, SiftExtractor, SuperPointExtractor


def counting(extractor):
    """Record the batch size of every real extraction (cache misses) in ``extractor.detected`` (the tests set
    ``batch_size=4``, so one call extracts up to 4 images)."""
    extractor.detected = []
    detect = extractor.detect
    extractor.detect = lambda images: extractor.detected.append(len(images)) or detect(images)
    return extractor


def write_images(folder, seeds: list[int]) -> ImageDataset:
    folder.mkdir(exist_ok=True)
    for seed in seeds:
        array = (pattern(seed, 64, 64) * 255).byte().permute(1, 2, 0).numpy()
        Image.fromarray(array).save(folder / f"{seed}.png")
    metadata = pd.DataFrame({"path": [f"{seed}.png" for seed in seeds], "identity": [str(s) for s in seeds]})
    return ImageDataset(metadata, root=folder, transform=T.Compose([T.Resize((64, 64)), T.ToTensor()]))


def test_disk_cache_returns_identical_features_and_file_keys_read_no_image(tmp_path, monkeypatch):
    dataset = write_images(tmp_path / "images", [1, 2, 3])
    first = counting(SiftExtractor(batch_size=4, max_num_keypoints=32, cache_dir=tmp_path / "cache", progress=False))(dataset)
    opened = []
    open_image = Image.open
    monkeypatch.setattr(Image, "open", lambda *a, **k: opened.append(a[0]) or open_image(*a, **k))
    # a new extractor (empty memory level): every entry from disk, no image decoded, equal tensors
    fresh = counting(SiftExtractor(batch_size=4, max_num_keypoints=32, cache_dir=tmp_path / "cache", progress=False))
    again = fresh(dataset)
    assert fresh.detected == [] and opened == []
    for name in ("keypoints", "descriptors", "scores", "mask", "image_sizes", "scales", "orientations"):
        assert torch.equal(getattr(again, name), getattr(first, name)), name
    # new content in one file (its size or modification time changes): that image only is read and extracted
    array = (pattern(9, 64, 64) * 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(tmp_path / "images" / "2.png")
    os.utime(tmp_path / "images" / "2.png", ns=(1, 1))
    changed = fresh(dataset)
    assert fresh.detected == [1] and len(opened) == 1
    assert torch.equal(changed.descriptors[[0, 2]], first.descriptors[[0, 2]])
    assert not torch.equal(changed.descriptors[1], first.descriptors[1])
    # another transform is another key
    resized = ImageDataset(dataset.metadata, root=tmp_path / "images", transform=T.Compose([T.Resize((48, 48)),
                                                                                             T.ToTensor()]))
    fresh(resized)
    assert fresh.detected == [1, 3]


def test_cache_is_invalidated_by_configuration_and_weights(tmp_path):
    images = Items([pattern(10), pattern(11)])
    cache = tmp_path / "cache"
    path, _ = superpoint_weights(tmp_path)
    base = counting(SuperPointExtractor(batch_size=4, weights=path, max_num_keypoints=16, cache_dir=cache, progress=False))
    features = base(images)
    other_config = counting(SuperPointExtractor(batch_size=4, weights=path, max_num_keypoints=8, cache_dir=cache, progress=False))
    other_config(images)
    (tmp_path / "other").mkdir()
    other_path, _ = superpoint_weights(tmp_path / "other", seed=1)
    other_weights = counting(
        SuperPointExtractor(batch_size=4, weights=other_path, max_num_keypoints=16, cache_dir=cache, progress=False)
    )
    assert not torch.equal(other_weights(images).descriptors, features.descriptors)
    same = counting(SuperPointExtractor(batch_size=4, weights=path, max_num_keypoints=16, cache_dir=cache, progress=False))
    assert torch.equal(same(images).descriptors, features.descriptors)
    assert (base.detected, other_config.detected, other_weights.detected, same.detected) == ([2], [2], [2], [])


def test_memory_level_is_a_bounded_lru():
    extractor = counting(SiftExtractor(batch_size=4, max_num_keypoints=16, memory_cache=2, progress=False))
    a, b, c = pattern(1), pattern(2), pattern(3)
    extractor(Items([a, b]))
    extractor(Items([a]))  # hit; a becomes the most recent, b the least
    extractor(Items([c]))  # miss; evicts b
    extractor(Items([a, b]))  # a hit, b extracted again
    assert extractor.detected == [2, 1, 1]
    off = counting(SiftExtractor(batch_size=4, max_num_keypoints=16, memory_cache=0, progress=False))
    off(Items([a]))
    off(Items([a]))
    assert off.detected == [1, 1]


def write_many(root: str, seed: int, rounds: int) -> None:
    torch.set_num_threads(1)
    cache = FeatureCache(root, "sift|test", memory_items=0)
    for round_ in range(rounds):
        for key in ("a", "b"):
            # every writer stores the same value for a key, a large one so a torn write would show
            cache.put(key, {"values": torch.full((20000,), float(ord(key)))})
        if round_ % 5 == 0:
            assert cache.get("a") is None or torch.equal(cache.get("a")["values"], torch.full((20000,), 97.0))


def test_concurrent_writers_do_not_corrupt_entries(tmp_path):
    writers = 2
    # fork: the writers start at once (spawn re-imports torch per process, tens of seconds on two shared cores)
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=write_many, args=(str(tmp_path), seed, 30)) for seed in range(writers)]
    for process in processes:
        process.start()
    write_many(str(tmp_path), writers, 30)  # this process reads and writes at the same time too
    for process in processes:
        process.join(timeout=60)
        assert process.exitcode == 0
    cache = FeatureCache(tmp_path, "sift|test", memory_items=0)
    assert torch.equal(cache.get("a")["values"], torch.full((20000,), 97.0))
    assert torch.equal(cache.get("b")["values"], torch.full((20000,), 98.0))
    assert not list(cache.folder.glob("*.tmp"))  # no temporary file left behind
    assert FeatureCache(tmp_path, "sift|other", memory_items=0).get("a") is None
