"""The pair score cache: a warm pass runs no network and gives identical scores; invalidation by matcher,
collector, extractor and image content; symmetric lookups; concurrent writers; a damaged file."""

from __future__ import annotations

import math
import multiprocessing
import os
import sqlite3

import numpy as np
import pytest
import torch
from helpers import needs_shipped, single_thread  # noqa: F401 (autouse fixture)
from PIL import Image
from test_feature_cache import counting
from test_features_local import pattern
from test_pair_scorer import CountingMatcher, images

from reid_lightning.features import SiftExtractor
from reid_lightning.similarity import PairScorer
from reid_lightning.similarity.pairwise import (
    CollectCounts,
    CollectCountsRansac,
    MatchDescriptors,
    MatchLightGlue,
)
from reid_lightning.similarity.pairwise.score_cache import FILE_NAME, PairScoreCache

PAIRS = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 3], [3, 1], [1, 2]])
CROSS = torch.tensor([[0, 0], [0, 1], [2, 1], [3, 0], [0, 1]])  # (query, gallery) with one repeat


def scorer(cache_dir, ratio_threshold: float = 0.9, thresholds=(0.0, 0.3), keypoints: int = 64,
           symmetric: bool = True, cache_features: bool = True) -> PairScorer:
    """A fresh extractor and matcher, as a new process has them; both count their calls."""
    extractor = counting(SiftExtractor(max_num_keypoints=keypoints, progress=False, memory_cache=0))
    matcher = CountingMatcher(ratio_threshold=ratio_threshold, collector=CollectCounts(thresholds), progress=False)
    matcher.matched = []
    return PairScorer(matcher, extractor, image_size=96, symmetric=symmetric, cache_features=cache_features,
                      cache_dir=cache_dir)


def test_warm_pass_is_identical_and_runs_neither_network(tmp_path):
    dataset = images(tmp_path / "images", [1, 2])
    gallery = images(tmp_path / "gallery", [3])
    # reference: the matcher without any cache
    reference = scorer(None, cache_features=False)
    expected = reference.score(dataset, dataset, PAIRS)
    expected_cross = reference.score(dataset, gallery, CROSS)
    cold = scorer(tmp_path / "cache")
    first, first_cross = cold.score(dataset, dataset, PAIRS), cold.score(dataset, gallery, CROSS)
    # leave-one-out: 5 distinct unordered pairs; cross: 4 distinct (query, gallery) pairs
    assert cold.matcher.matched == [5, 4]
    warm = scorer(tmp_path / "cache")  # a new process's view: disk only
    again, again_cross = warm.score(dataset, dataset, PAIRS), warm.score(dataset, gallery, CROSS)
    assert warm.matcher.matched == [] and warm.extractor.detected == []
    assert cold.score(dataset, dataset, PAIRS) is not None and cold.matcher.matched == [5, 4]  # memory level
    names = ["sift_CountingMatcher@0.0", "sift_CountingMatcher@0.3"]
    for result in (first, again):
        assert list(result) == names
        for name in names:
            assert torch.equal(result[name], expected[name])
    for result in (first_cross, again_cross):
        for name in names:
            assert torch.equal(result[name], expected_cross[name])
    assert (expected[names[0]] > expected[names[1]]).any()  # two different score columns, both cached


def test_cache_is_invalidated_by_matcher_collector_extractor_and_image(tmp_path):
    dataset = images(tmp_path / "images", [1, 2])
    cache = tmp_path / "cache"
    base = scorer(cache)
    base_scores = base.score(dataset, dataset, PAIRS)["sift_CountingMatcher@0.0"]
    for changed in (scorer(cache, ratio_threshold=0.8), scorer(cache, thresholds=(0.0, 0.4)),
                    scorer(cache, keypoints=32)):
        changed.score(dataset, dataset, PAIRS)
        assert changed.matcher.matched == [5]
    # new content in image 2 (its size or modification time changes): only the pairs with it are matched again
    array = (pattern(9, 96, 96) * 255).byte().permute(1, 2, 0).numpy()
    Image.fromarray(array).save(tmp_path / "images" / "2_0.png")
    os.utime(tmp_path / "images" / "2_0.png", ns=(1, 1))
    rewritten = scorer(cache)
    new_scores = rewritten.score(dataset, dataset, PAIRS)["sift_CountingMatcher@0.0"]
    with_image_2 = (PAIRS == 2).any(dim=1)
    # (0, 2), (2, 3), (1, 2) matched again; image 2 alone extracted (the others come from the feature cache)
    assert rewritten.matcher.matched == [3] and rewritten.extractor.detected == [1]
    assert torch.equal(new_scores[~with_image_2], base_scores[~with_image_2])
    assert not torch.equal(new_scores[with_image_2], base_scores[with_image_2])


def test_symmetric_scorer_reads_a_pair_stored_in_the_other_order(tmp_path):
    dataset = images(tmp_path / "images", [1, 2])
    same_files = dataset.get_subset(np.arange(len(dataset)))  # another dataset object, the same images
    scorer(tmp_path / "cache").score(dataset, dataset, torch.tensor([[0, 2]]))  # stored as (0, 2)
    symmetric = scorer(tmp_path / "cache")
    symmetric.score(same_files, dataset, torch.tensor([[2, 0]]))
    directed = scorer(tmp_path / "cache", symmetric=False)
    directed.score(same_files, dataset, torch.tensor([[2, 0]]))
    assert symmetric.matcher.matched == [] and directed.matcher.matched == [1]


def write_pairs(folder: str, writer: int, rounds: int) -> None:
    cache = PairScoreCache(folder, "test-config", memory_items=0)
    for round_ in range(rounds):
        # every writer stores the same values for shared keys, and its own keys
        shared = [((f"a{i}", f"b{i}"), {"count": float(i), "other": float(-i)}) for i in range(50)]
        own = [((f"w{writer}", f"r{round_}"), {"count": float(round_), "other": math.nan})]
        cache.put_many(shared + own)
        found = cache.get_many([key for key, _ in shared])
        assert all(entry is None or entry == value for entry, (_, value) in zip(found, shared, strict=True))


def test_concurrent_writers_do_not_corrupt_the_cache(tmp_path):
    writers, rounds = 3, 20
    context = multiprocessing.get_context("fork")
    processes = [context.Process(target=write_pairs, args=(str(tmp_path), w, rounds)) for w in range(writers)]
    for process in processes:
        process.start()
    write_pairs(str(tmp_path), writers, rounds)
    for process in processes:
        process.join(timeout=120)
        assert process.exitcode == 0
    with sqlite3.connect(tmp_path / FILE_NAME) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert connection.execute("SELECT COUNT(*) FROM scores").fetchone() == (50 + (writers + 1) * rounds,)
    cache = PairScoreCache(tmp_path, "test-config", memory_items=0)
    assert cache.get_many([("a7", "b7")]) == [{"count": 7.0, "other": -7.0}]
    own = cache.get_many([(f"w{w}", f"r{r}") for w in range(writers + 1) for r in range(rounds)])
    assert all(entry["count"] == r and math.isnan(entry["other"]) for entry, r in zip(own, list(range(rounds)) * 4,
                                                                                      strict=True))
    assert PairScoreCache(tmp_path, "other-config", memory_items=0).get_many([("a7", "b7")]) == [None]


def test_damaged_cache_file_warns_and_scores_are_recomputed(tmp_path):
    dataset = images(tmp_path / "images", [1])
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / FILE_NAME).write_bytes(b"not a database" * 100)
    expected = scorer(None, cache_features=False).score(dataset, dataset, torch.tensor([[0, 1]]))
    damaged = scorer(tmp_path / "cache")
    with pytest.warns(UserWarning, match=f"{FILE_NAME}.*Delete the file"):
        scores = damaged.score(dataset, dataset, torch.tensor([[0, 1]]))
    assert damaged.matcher.matched == [1]
    assert all(torch.equal(scores[name], expected[name]) for name in expected)


def test_unwritable_cache_folder_warns_and_keeps_the_scores(tmp_path):
    blocker = tmp_path / "not_a_folder"
    blocker.write_text("x")  # a file where the cache folder should be
    cache = PairScoreCache(blocker / "scores", "test-config")
    with pytest.warns(UserWarning, match="not cached on disk"):
        cache.put_many([(("a", "b"), {"count": 3.0})])
    assert cache.get_many([("a", "b"), ("b", "a")], either_order=True) == [{"count": 3.0}, {"count": 3.0}]


@needs_shipped
def test_matcher_config_key_names_what_changes_scores_only():
    def key(**options) -> str:
        return MatchLightGlue("aliked", device="cpu", progress=False, **options).config_key

    base = key()
    # every setting that changes a pair's matches changes the key; the batch size and progress bar do not
    for changed in ({"adaptive": False}, {"depth_confidence": 0.95}, {"width_confidence": 0.99}, {"bf16": True},
                    {"init_threshold": 0.2}, {"collector": CollectCounts([0.4])}):
        assert key(**changed) != base, changed
    assert key(batch_size=3) == base
    ransac = [MatchDescriptors(collector=CollectCountsRansac(inlier_threshold=t)).config_key for t in (1.0, 2.0)]
    assert ransac[0] != ransac[1]
