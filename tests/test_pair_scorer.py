"""PairScorer: pairs asked twice or in both directions are matched once, with the scores of matching each."""

from __future__ import annotations

import pandas as pd
import torch
import torchvision.transforms as T
from helpers import needs_shipped, single_thread  # noqa: F401 (autouse fixture)
from PIL import Image
from test_features_local import pattern

from reid_lightning.data.dataset import ImageDataset
from reid_lightning.features import AlikedExtractor, SiftExtractor
from reid_lightning.similarity import PairScorer
from reid_lightning.similarity.pair_scorer import symmetric_pairs
from reid_lightning.similarity.pairwise import CollectCounts, MatchDescriptors, MatchLightGlue


def test_symmetric_pairs_by_hand():
    pairs = torch.tensor([[0, 1], [1, 0], [2, 0], [1, 1], [0, 1], [3, 2]])
    unique, inverse = symmetric_pairs(pairs)
    # (0, 1) and (1, 0) share one match; (2, 0) and (3, 2) are asked in one direction and keep it
    assert unique.tolist() == [[0, 1], [1, 1], [2, 0], [3, 2]]
    assert inverse.tolist() == [0, 0, 2, 1, 0, 3]
    empty, none = symmetric_pairs(torch.zeros(0, 2, dtype=torch.long))
    assert empty.shape == (0, 2) and none.shape == (0,)


def images(folder, seeds: list[int]) -> ImageDataset:
    """Two views per seed: the pattern and a shifted copy, as two images of one individual."""
    folder.mkdir(exist_ok=True)
    rows = []
    for seed in seeds:
        image = pattern(seed, 96, 96)
        for view, array in enumerate([image, torch.roll(image, shifts=(5, 3), dims=(1, 2))]):
            Image.fromarray((array * 255).byte().permute(1, 2, 0).numpy()).save(folder / f"{seed}_{view}.png")
            rows.append({"path": f"{seed}_{view}.png", "identity": str(seed)})
    return ImageDataset(pd.DataFrame(rows), root=folder, transform=T.ToTensor())


class CountingMatcher(MatchDescriptors):
    """Records the number of pairs it matches."""

    matched: list[int]

    def score_pairs(self, query, database, pairs):
        self.matched = [*getattr(self, "matched", []), len(pairs)]
        return super().score_pairs(query, database, pairs)


def test_leave_one_out_matches_each_unordered_pair_once(tmp_path):
    dataset = images(tmp_path / "images", [1, 2])
    pairs = torch.tensor([[0, 1], [1, 0], [0, 2], [2, 3], [3, 2], [0, 1]])
    extractor = SiftExtractor(max_num_keypoints=64, progress=False)
    scores = {}
    for symmetric in (True, False):
        matcher = CountingMatcher(collector=CollectCounts([0.0]), progress=False)
        scorer = PairScorer(matcher, extractor, image_size=96, symmetric=symmetric,
                            cache_dir=tmp_path / f"cache-{symmetric}")
        scores[symmetric] = scorer.score(dataset, dataset, pairs)["sift_CountingMatcher"]
        assert matcher.matched == [3 if symmetric else 5]
    # mutual nearest neighbours are symmetric exactly: equal counts, the same for repeated pairs
    assert torch.equal(scores[True], scores[False])
    assert scores[True][0] == scores[True][1] == scores[True][5] and scores[True][0] > scores[True][2]


@needs_shipped
def test_symmetric_lightglue_scores_equal_both_directions(tmp_path):
    dataset = images(tmp_path / "images", [3, 4, 5])
    every = torch.cartesian_prod(torch.arange(6), torch.arange(6))
    every = every[every[:, 0] != every[:, 1]]
    extractor = AlikedExtractor(max_num_keypoints=128, progress=False)
    matcher = MatchLightGlue("aliked", collector=CollectCounts([0.5]), device="cpu", progress=False)
    symmetric = PairScorer(matcher, extractor, image_size=96, cache_dir=tmp_path / "cache")
    both = PairScorer(matcher, extractor, image_size=96, symmetric=False, cache_dir=tmp_path / "cache")
    reused = symmetric.score(dataset, dataset, every)["aliked_MatchLightGlue"]
    matched = both.score(dataset, dataset, every)["aliked_MatchLightGlue"]
    # LightGlue is symmetric up to float noise: a borderline match may flip (README: stated tolerance)
    difference = (reused - matched).abs()
    assert (difference <= torch.maximum(torch.tensor(2.0), 0.05 * matched)).all()
    same = dataset.metadata.identity.to_numpy()[every[:, 0]] == dataset.metadata.identity.to_numpy()[every[:, 1]]
    assert reused[torch.from_numpy(same)].min() > reused[torch.from_numpy(~same)].max()


def test_matches_are_the_matchers_own_for_each_pair_at_image_size(tmp_path):
    dataset = images(tmp_path / "images", [6, 7])
    size = 64  # not the files' 96: keypoints and images must both be at the scorer's size
    extractor = SiftExtractor(max_num_keypoints=64, progress=False)
    matcher = MatchDescriptors(collector=CollectCounts([0.0]), progress=False)
    scorer = PairScorer(matcher, extractor, image_size=size, cache_dir=tmp_path / "cache")
    pairs = torch.tensor([[2, 3], [0, 1], [0, 2]])  # unsorted, repeated query: each row keeps its own pair
    matched = scorer.matches(dataset, dataset, pairs)

    # expectation straight from the matcher on features of the images resized independently of the scorer
    resized = ImageDataset(dataset.metadata, root=tmp_path / "images", load_label=False,
                           transform=T.Compose([T.Resize((size, size)), T.ToTensor()]))
    features = SiftExtractor(max_num_keypoints=64, progress=False)(resized)
    expected = matcher.match(matcher.prepare(features, features, pairs), pairs)
    assert len(matched) == len(pairs)
    for row, ((query, gallery), pair) in enumerate(zip(pairs.tolist(), matched, strict=True)):
        keep = expected.mask[row]
        assert len(pair.confidence) == int(keep.sum())
        torch.testing.assert_close(pair.confidence, expected.confidence[row][keep])
        torch.testing.assert_close(pair.keypoints0, expected.keypoints0[row][keep])
        torch.testing.assert_close(pair.keypoints1, expected.keypoints1[row][keep])
        torch.testing.assert_close(pair.query_image, resized[query])
        torch.testing.assert_close(pair.gallery_image, resized[gallery])
        assert pair.query_image.shape == (3, size, size)
        assert ((pair.keypoints1 >= 0) & (pair.keypoints1 < size)).all()
    # the shifted view of the same texture matches, another texture hardly does
    assert len(matched[1].confidence) > 10 and len(matched[1].confidence) > 3 * len(matched[2].confidence)
    # the counts agree with the scores of the same pairs
    counts = scorer.score(dataset, dataset, pairs)["sift_MatchDescriptors"]
    assert counts.tolist() == [float(len(pair.confidence)) for pair in matched]
