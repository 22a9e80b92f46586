"""Pair matchers: batched scoring, the seed's examples, pretrained LightGlue, LoFTR and the weight-free
matcher."""

from __future__ import annotations

import re

import kornia
import pytest
import torch
from helpers import Items, needs_shipped, single_thread  # noqa: F401 (autouse fixture)
from kornia.feature import LightGlue, LoFTR, match_smnn

from reid_lightning.features import (
    AlikedExtractor,
    DiskExtractor,
    LocalFeatures,
    SiftExtractor,
    SuperPointExtractor,
)
from reid_lightning.features.superpoint import SuperPointNet
from reid_lightning.features.weights import WEIGHTS_ENV_VAR
from reid_lightning.similarity.pairwise import (
    CollectCounts,
    CollectCountsRansac,
    MatchDescriptors,
    MatchLightGlue,
    MatchLOFTR,
    check_pairs,
)


def pattern(seed: int, size: int = 96) -> torch.Tensor:
    """Random blurred rectangles: a textured RGB image in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.zeros(3, size, size)
    for _ in range(25):
        x, y = torch.randint(0, size - 12, (2,), generator=generator).tolist()
        w, h = torch.randint(5, 20, (2,), generator=generator).tolist()
        image[:, y : y + h, x : x + w] = torch.rand(3, 1, 1, generator=generator)
    return kornia.filters.gaussian_blur2d(image[None], (5, 5), (1.0, 1.0))[0].clamp(0, 1)


def rotated(
    image: torch.Tensor, degrees: float = 12.0, shift: tuple[float, float] = (4.0, -3.0)
) -> torch.Tensor:
    centre = torch.tensor([[image.shape[-1] / 2, image.shape[-2] / 2]])
    matrix = kornia.geometry.get_rotation_matrix2d(centre, torch.tensor([degrees]), torch.ones(1, 2))
    matrix[0, :, 2] += torch.tensor(shift)
    return kornia.geometry.warp_affine(image[None], matrix, image.shape[-2:])[0]



@pytest.fixture(scope="module")
def scenes():
    """Query patterns, the database holds a rotated and shifted copy of each plus an unrelated pattern."""
    originals = [pattern(seed) for seed in range(3)]
    return Items(originals), Items([rotated(image) for image in originals] + [pattern(99)])


@pytest.fixture(scope="module")
def sift_features(scenes):
    extractor = SiftExtractor(max_num_keypoints=128, device="cpu", progress=False)
    return extractor(scenes[0]), extractor(scenes[1])


def random_features(counts: list[int], dim: int = 128, size: int = 64, seed: int = 0) -> LocalFeatures:
    """Hand-made features with different keypoint counts per image (so batches need padding)."""
    generator = torch.Generator().manual_seed(seed)
    k = max(counts)
    mask = torch.arange(k)[None] < torch.tensor(counts)[:, None]
    return LocalFeatures(
        keypoints=torch.rand(len(counts), k, 2, generator=generator) * (size - 1) * mask[..., None],
        descriptors=torch.nn.functional.normalize(
            torch.randn(len(counts), k, dim, generator=generator), dim=-1
        )
        * mask[..., None],
        scores=mask.float(),
        mask=mask,
        image_sizes=torch.tensor([[size, size]] * len(counts)),
        extractor="disk",
        config_key="disk|hand-made",
    )


def save_random_lightglue(path, features: str) -> dict[str, torch.Tensor]:
    """Random LightGlue weights for ``features`` in the original repository's layout (``self_attn.<i>.*``)."""
    torch.manual_seed(0)
    config = {k: v for k, v in LightGlue.features[features].items() if k != "weights"}
    state_dict = LightGlue(None, **config).state_dict()
    legacy_key = re.compile(r"^transformers\.(\d+)\.(self_attn|cross_attn)\.")
    legacy = {legacy_key.sub(r"\2.\1.", key): value for key, value in state_dict.items()}
    assert "self_attn.0.Wqkv.weight" in legacy
    torch.save(legacy, path)
    return state_dict


def kornia_reference(matcher: MatchLightGlue) -> LightGlue:
    """kornia's own LightGlue with the matcher's weights and mode (adaptive: the matcher's confidences)."""
    config = {k: v for k, v in LightGlue.features[matcher.features].items() if k != "weights"}
    depth, width = (matcher.depth_confidence, matcher.width_confidence) if matcher.adaptive else (-1, -1)
    model = LightGlue(
        None, **config, depth_confidence=depth, width_confidence=width,
        filter_threshold=matcher.model.conf.filter_threshold,
    )
    model.load_state_dict(matcher.model.state_dict())
    return model.eval()


def kornia_counts(
    model: LightGlue, query: LocalFeatures, database: LocalFeatures, threshold: float
) -> torch.Tensor:
    """Reference: kornia's own LightGlue forward, one unpadded pair at a time."""

    def side(features: LocalFeatures) -> dict[str, torch.Tensor]:
        n = int(features.num_keypoints)
        inputs = {
            "keypoints": features.keypoints[:, :n],
            "descriptors": features.descriptors[:, :n],
            "image_size": features.image_sizes,
        }
        if features.scales is not None:
            inputs |= {"scales": features.scales[:, :n], "oris": features.orientations[:, :n]}
        return inputs

    device = next(model.parameters()).device
    query, database = query.to(device), database.to(device)
    counts = torch.zeros(len(query), len(database))
    with torch.inference_mode():
        for i in range(len(query)):
            for j in range(len(database)):
                out = model({"image0": side(query[i]), "image1": side(database[j])})
                counts[i, j] = (out["scores"][0] > threshold).sum()
    return counts


# --- pairs and the (Q, G) / score_pairs contract ------------------------------------------------------------


def test_pairs_are_checked_with_clear_errors():
    assert check_pairs([[0, 1], [2, 0]], 3, 2).dtype == torch.long
    with pytest.raises(IndexError, match="row 1 has database index 2"):
        check_pairs([[0, 1], [0, 2]], 3, 2)
    with pytest.raises(ValueError, match=r"\(P, 2\)"):
        check_pairs(torch.zeros(4, 3, dtype=torch.long), 3, 2)


def test_weight_free_matcher_separates_copies_from_unrelated_images(sift_features):
    query, database = sift_features
    counts = MatchDescriptors(
        ratio_threshold=0.9, collector=CollectCounts([0.0]), device="cpu", progress=False
    )(query, database)
    for i in range(3):  # reference: kornia's per-pair symmetric mutual nearest neighbours
        for j in range(4):
            a, b = query[i], database[j]
            _, idx = match_smnn(a.descriptors[0, a.mask[0]], b.descriptors[0, b.mask[0]], 0.9)
            assert counts[i, j] == len(idx)
    copies, others = counts.diagonal(), counts[~torch.eye(3, 4, dtype=torch.bool)]
    assert copies.min() >= 30 and copies.min() > 2 * others.max()


def test_score_pairs_equal_the_matrix_and_unscored_pairs_are_nan(sift_features):
    query, database = sift_features
    matcher = MatchDescriptors(
        collector=CollectCountsRansac(model_type="homography", inlier_threshold=2.0),
        batch_size=5,
        device="cpu",
        progress=False,
    )
    full = matcher(query, database)
    assert full.shape == (3, 4) and full.dtype == torch.float32 and not full.isnan().any()
    assert (
        full.diagonal().min() > 3 * full[:, 3].max()
    )  # rotated copies are consistent, the unrelated image not
    pairs = torch.tensor([[2, 3], [0, 0], [1, 2], [2, 2]])
    assert torch.equal(matcher.score_pairs(query, database, pairs), full[pairs[:, 0], pairs[:, 1]])
    partial = matcher(query, database, pairs=pairs)
    scored = torch.zeros(3, 4, dtype=torch.bool)
    scored[pairs[:, 0], pairs[:, 1]] = True
    assert partial[~scored].isnan().all() and torch.equal(partial[scored], full[scored])
    assert matcher.score_pairs(query, database, torch.empty(0, 2, dtype=torch.long)).shape == (0,)


# --- LightGlue ----------------------------------------------------------------------------------------------


def test_lightglue_batches_with_padding_equal_kornia_per_pair(tmp_path):
    save_random_lightglue(tmp_path / "lg.pth", "disk")
    # different keypoint counts (one image without any) force padding inside every batch
    query = random_features([12, 40, 0], seed=1)
    database = random_features([33, 7, 40, 25], seed=2)
    thresholds = [0.0, 0.02, 0.05]  # random weights give low confidences; keep every mutual match (0.0)
    scores = {}
    for batch_size in (1, 5, 64):
        matcher = MatchLightGlue(
            "disk",
            collector=CollectCounts(thresholds),
            batch_size=batch_size,
            weights=tmp_path / "lg.pth",
            device="cpu",
            init_threshold=0.0,
            progress=False,
            adaptive=False,
        )
        scores[batch_size] = torch.stack(list(matcher(query, database).values()))
    assert torch.equal(scores[1], scores[5]) and torch.equal(scores[1], scores[64])
    reference = torch.stack([kornia_counts(matcher.model, query, database, t) for t in thresholds])
    assert torch.equal(scores[64], reference)
    assert (
        (reference[0, :2] > 0).all()
        and (reference[:, 2] == 0).all()
        and reference[2].sum() < reference[0].sum()
    )


def save_decisive_lightglue(path) -> None:
    """Random DISK LightGlue weights under which adaptive depth and width act: sharper token confidences
    (leaning confident) and matchabilities; plain random weights leave every point undecided."""
    save_random_lightglue(path, "disk")
    state_dict = torch.load(path)
    for key in state_dict:
        if re.fullmatch(r"(token_confidence\.\d+\.token\.0|log_assignment\.\d+\.matchability)\.weight", key):
            state_dict[key] = state_dict[key] * 10
        if re.fullmatch(r"token_confidence\.\d+\.token\.0\.bias", key):
            state_dict[key] = state_dict[key] + 3
    torch.save(state_dict, path)


def test_adaptive_lightglue_equals_kornia_alone_and_in_any_batch(tmp_path):
    save_decisive_lightglue(tmp_path / "lg.pth")
    query = random_features([12, 40, 0, 30], seed=3)
    database = random_features([33, 7, 40, 25, 18], seed=4)
    pairs = torch.cartesian_prod(torch.arange(4), torch.arange(5))
    scores = {}
    for batch_size in (1, 3, 64):
        matcher = MatchLightGlue(
            "disk", collector=CollectCounts([0.0]), batch_size=batch_size, weights=tmp_path / "lg.pth",
            device="cpu", init_threshold=0.0, progress=False, adaptive=True,
            depth_confidence=0.6, width_confidence=0.6,
        )
        scores[batch_size] = matcher(query, database)
        alone = torch.stack([matcher.score_pairs(query, database, pair[None]) for pair in pairs])
        assert torch.equal(alone.view(4, 5), scores[batch_size])
    assert torch.equal(scores[1], scores[3]) and torch.equal(scores[1], scores[64])
    reference = kornia_reference(matcher)
    assert torch.equal(scores[64], kornia_counts(reference, query, database, 0.0))
    # the reference really stopped early on some pairs, at different layers, and pruned points
    stops, pruned = [], []
    with torch.inference_mode():
        for i, j in pairs.tolist():
            if query.num_keypoints[i] and database.num_keypoints[j]:
                n0, n1 = int(query.num_keypoints[i]), int(database.num_keypoints[j])
                out = reference({
                    "image0": {"keypoints": query.keypoints[i : i + 1, :n0],
                               "descriptors": query.descriptors[i : i + 1, :n0], "image_size": query.image_sizes[:1]},
                    "image1": {"keypoints": database.keypoints[j : j + 1, :n1],
                               "descriptors": database.descriptors[j : j + 1, :n1],
                               "image_size": database.image_sizes[:1]},
                })
                stops.append(out["stop"])
                pruned.append(bool((out["prune0"] < out["stop"]).any()))
    assert len(set(stops)) > 1 and min(stops) < reference.conf.n_layers and any(pruned)
    full = MatchLightGlue("disk", collector=CollectCounts([0.0]), weights=tmp_path / "lg.pth", device="cpu",
                          init_threshold=0.0, progress=False, adaptive=False)
    assert not torch.equal(full(query, database), scores[1])


def test_lightglue_sift_passes_scales_and_orientations(tmp_path, sift_features):
    save_random_lightglue(tmp_path / "sift_lg.pth", "sift")
    query, database = sift_features
    matcher = MatchLightGlue(
        "sift", collector=CollectCounts([0.1]), weights=tmp_path / "sift_lg.pth", device="cpu", progress=False,
        adaptive=False,
    )
    counts = matcher(query[:2], database[:2])
    assert torch.equal(counts, kornia_counts(matcher.model, query[:2], database[:2], 0.1))


def test_lightglue_rejects_wrong_inputs(tmp_path, scenes, sift_features):
    save_random_lightglue(tmp_path / "lg.pth", "disk")
    matcher = MatchLightGlue("disk", weights=tmp_path / "lg.pth", device="cpu", progress=False)
    with pytest.raises(TypeError, match="LocalFeatures"):
        matcher(*scenes)
    with pytest.raises(ValueError, match="'sift' features"):
        matcher(*sift_features)
    query = random_features([3, 4])
    database = LocalFeatures(**{**random_features([5]).__dict__, "config_key": "disk|other"})
    with pytest.raises(ValueError, match="different extractor configurations"):
        matcher(query, database)
    with pytest.raises(ValueError, match="features must be one of"):
        MatchLightGlue("orb")


def test_seed_example_superpoint_lightglue(tmp_path, monkeypatch, scenes):
    """The seed's SuperPoint + LightGlue example verbatim, with weights from REID_LIGHTNING_WEIGHTS."""
    torch.manual_seed(0)
    torch.save(SuperPointNet().state_dict(), tmp_path / "superpoint_v1.pth")
    save_random_lightglue(tmp_path / "superpoint_lightglue.pth", "superpoint")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    dataset_query, dataset_database = scenes

    extractor = SuperPointExtractor()
    matcher = MatchLightGlue(features="superpoint", collector=CollectCounts(thresholds=[0.25, 0.5, 0.75]))
    output = matcher(extractor(dataset_query), extractor(dataset_database))

    assert list(output) == [0.25, 0.5, 0.75] and all(grid.shape == (3, 4) for grid in output.values())
    assert (output[0.25] >= output[0.5]).all() and (output[0.5] >= output[0.75]).all()
    assert matcher.adaptive  # the CPU default
    reference = kornia_counts(
        kornia_reference(matcher), extractor(dataset_query), extractor(dataset_database), 0.25
    )
    assert torch.equal(output[0.25], reference)


@needs_shipped
@pytest.mark.parametrize(
    ("extractor_class", "features"), [(AlikedExtractor, "aliked"), (DiskExtractor, "disk")]
)
def test_pretrained_lightglue_matches_same_pattern_pairs(scenes, extractor_class, features):
    extractor = extractor_class(max_num_keypoints=128, device="cpu", progress=False)
    matcher = MatchLightGlue(
        features=features, collector=CollectCounts(thresholds=[0.25, 0.5, 0.75]), device="cpu", progress=False
    )
    output = matcher(extractor(scenes[0]), extractor(scenes[1]))
    same = output[0.5].diagonal()
    different = output[0.5][~torch.eye(3, 4, dtype=torch.bool)]
    assert same.min() >= 20 and same.min() > 2 * different.max()
    assert (output[0.25] >= output[0.5]).all() and (output[0.5] >= output[0.75]).all()



@needs_shipped
@pytest.mark.parametrize("extractor_class", [AlikedExtractor, DiskExtractor])
def test_keypoints_matched_by_mutual_nearest_neighbours_find_the_same_pattern(scenes, extractor_class):
    # configs/rerank/aliked_mnn.yaml and disk_mnn.yaml: descriptors, no matcher network, Lowe's ratio 0.8
    extractor = extractor_class(max_num_keypoints=128, device="cpu", progress=False)
    matcher = MatchDescriptors(ratio_threshold=0.8, collector=CollectCounts(thresholds=[0.0]), progress=False)
    counts = matcher(extractor(scenes[0]), extractor(scenes[1]))
    same = counts.diagonal()
    different = counts[~torch.eye(3, 4, dtype=torch.bool)]
    assert same.min() >= 10 and same.min() > 2 * different.max()

# --- LoFTR --------------------------------------------------------------------------------------------------


def test_seed_example_loftr_runs_the_backbone_once_per_image(tmp_path, monkeypatch):
    torch.manual_seed(0)
    torch.save({"state_dict": LoFTR(pretrained=None).state_dict()}, tmp_path / "loftr_outdoor.ckpt")
    monkeypatch.setenv(WEIGHTS_ENV_VAR, str(tmp_path))
    gray = [kornia.color.rgb_to_grayscale(pattern(seed, 64)[None])[0] for seed in range(4)]
    dataset_query, dataset_database = Items(gray[:2]), Items(gray[1:] + [gray[0]])

    matcher = MatchLOFTR(collector=CollectCounts(thresholds=[0.0, 0.05]), init_threshold=0.0, device="cpu")
    seen = []
    extract = matcher.model.extract_features
    matcher.model.extract_features = lambda images: seen.append(len(images)) or extract(images)
    output = matcher(dataset_query, dataset_database)
    assert sum(seen) == len(dataset_query) + len(dataset_database)  # 2 + 4 images for 8 pairs

    reference = torch.zeros(2, 4)
    with torch.inference_mode():
        for i in range(2):
            for j in range(4):
                out = LoFTR.forward(
                    matcher.model, {"image0": gray[:2][i][None], "image1": dataset_database[j][0][None]}
                )
                reference[i, j] = (out["confidence"] > 0.0).sum()
    assert torch.equal(output[0.0], reference) and reference.sum() > 0
    pairs = torch.tensor([[1, 3], [0, 2]])
    assert torch.equal(
        matcher.score_pairs(dataset_query, dataset_database, pairs)[0.05], output[0.05][[1, 0], [3, 2]]
    )
