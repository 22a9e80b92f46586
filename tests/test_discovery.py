"""Discovery of new individuals: the neighbour graph, sparse agglomerative clustering against hand computations
and scipy's dense linkage, the AMI-chosen cut against scikit-learn, and the contact sheet."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.cluster.hierarchy import fcluster, is_monotonic, is_valid_linkage, linkage
from scipy.spatial.distance import squareform
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from reid_lightning.inference import discovery as discovery_module
from reid_lightning.inference.dendrogram import ami_per_cut
from reid_lightning.inference.discovery import choose_discovery_threshold, discover
from reid_lightning.report.contact_sheet import contact_sheet
from reid_lightning.runtime import grouping
from reid_lightning.runtime.grouping import (
    LINKAGES,
    SimilarityGraph,
    build_dendrogram,
    cosine_matrix,
    dendrogram_of,
    full_linkage_dendrogram,
    group_new_photos,
    join_groups,
    number_by_size,
    similarity_graph,
)

# A hand-made graph of 5 photos on a probability scale (a missing pair counts as 0):
#   0-1: 0.9   1-2: 0.8   0-2: 0.4   2-3: 0.3   3-4: 0.7
# average linkage, by hand:
#   1. {0,1} at 0.9
#   2. {3,4} at 0.7              ({0,1}-2 = (0.4 + 0.8) / 2 = 0.6; 2-{3,4} = (0.3 + 0) / 2 = 0.15)
#   3. {0,1,2} at 0.6
#   4. all at (0.3 + five missing pairs at 0) / 6 = 0.05
# single linkage: {0,1} 0.9, {0,1,2} 0.8, {3,4} 0.7, all 0.3
# complete linkage: {0,1} 0.9, {3,4} 0.7, {0,1,2} min(0.4, 0.8) = 0.4, all 0 (pair 2-4 missing)
HAND_PAIRS = [[0, 1], [1, 2], [0, 2], [2, 3], [3, 4]]
HAND_SCORES = [0.9, 0.8, 0.4, 0.3, 0.7]


def hand_graph() -> SimilarityGraph:
    return SimilarityGraph.from_edges(HAND_PAIRS, HAND_SCORES, num_nodes=5, missing_score=0.0)


def clustered_embeddings(sizes, *, dim=32, noise=0.05, seed=0):
    """Photos of well-separated individuals: orthogonal-ish random centres plus small noise; (N, D), (N,)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(len(sizes), dim, generator=generator), dim=1)
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    embeddings = centres[labels] + noise * torch.randn(len(labels), dim, generator=generator)
    return embeddings, labels.numpy()


def orthogonal_individuals(sizes, *, dim=64, noise=0.07, seed=0):
    """Photos of individuals with orthogonal centres and wide noise (within cosines 0.6-0.9); (N, D), (N,)."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.linalg.qr(torch.randn(dim, dim, generator=generator))[0][: len(sizes)]
    labels = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return centres[labels] + noise * torch.randn(len(labels), dim, generator=generator), labels.numpy()


def random_graph(rng, n, density, floor=-1.0):
    upper = np.triu_indices(n, 1)
    keep = rng.random(len(upper[0])) < density
    pairs = np.stack([upper[0][keep], upper[1][keep]], axis=1)
    scores = rng.uniform(0.0, 1.0, len(pairs))
    dense = np.full((n, n), floor)
    dense[pairs[:, 0], pairs[:, 1]] = dense[pairs[:, 1], pairs[:, 0]] = scores
    np.fill_diagonal(dense, 1.0)
    return SimilarityGraph.from_edges(pairs, scores, num_nodes=n, missing_score=floor), dense


# ------------------------------------------------------------------------------------------------ graph
def test_neighbour_graph_is_the_symmetric_union_of_dense_top_k():
    embeddings = torch.randn(40, 16, generator=torch.Generator().manual_seed(1))
    graph = similarity_graph(embeddings, k=4, chunk_size=7)  # several query chunks
    unit = embeddings.double() / embeddings.double().norm(dim=1, keepdim=True)
    cosine = (unit @ unit.T).numpy()
    np.fill_diagonal(cosine, -np.inf)
    expected = {}
    for i, row in enumerate(cosine):
        for j in np.argsort(-row)[:4]:
            expected[(min(i, j), max(i, j))] = cosine[i, j]
    assert {tuple(pair) for pair in graph.pairs.tolist()} == set(expected)
    scores = dict(zip(map(tuple, graph.pairs.tolist()), graph.scores.tolist()))
    assert all(scores[pair] == pytest.approx(value, abs=1e-9) for pair, value in expected.items())
    assert graph.missing_score == -1.0 and graph.k == 4 and graph.num_nodes == 40


def test_given_edge_scores_replace_or_add_pairs_and_duplicates_are_averaged():
    graph = hand_graph().with_scores([[1, 0], [0, 1], [4, 0]], [0.2, 0.4, 0.5])
    scores = dict(zip(map(tuple, graph.pairs.tolist()), graph.scores.tolist()))
    assert scores == pytest.approx({(0, 1): 0.3, (1, 2): 0.8, (0, 2): 0.4, (2, 3): 0.3, (3, 4): 0.7, (0, 4): 0.5})
    embeddings = torch.randn(12, 8, generator=torch.Generator().manual_seed(2))
    fused = similarity_graph(embeddings, k=3, edge_pairs=[[0, 11]], edge_scores=[0.99])
    assert dict(zip(map(tuple, fused.pairs.tolist()), fused.scores.tolist()))[(0, 11)] == 0.99


def test_scores_below_the_missing_score_are_refused():
    with pytest.raises(ValueError, match="below missing_score"):
        SimilarityGraph.from_edges([[0, 1]], [-0.5], num_nodes=2, missing_score=0.0)


# ------------------------------------------------------------------------------------------------ clustering
def test_hand_made_graph_gives_the_hand_computed_average_linkage_merges_and_groups():
    dendrogram = build_dendrogram(hand_graph())
    np.testing.assert_allclose(dendrogram.levels, [0.9, 0.7, 0.6, 0.05])
    assert dendrogram.children.tolist() == [[0, 1], [3, 4], [2, 5], [6, 7]]
    # t = 0.65: {0,1}, {3,4}, {2}; two groups of 2, the one with the first photo first
    assert discover(hand_graph(), threshold=0.65).groups.tolist() == [0, 0, 2, 1, 1]
    assert discover(hand_graph(), threshold=0.5).groups.tolist() == [0, 0, 0, 1, 1]
    # 2-{3,4} would be 0.3 if the missing pair 2-4 were ignored instead of counted as the lowest score
    assert discover(hand_graph(), threshold=0.2).groups.tolist() == [0, 0, 0, 1, 1]
    assert discover(hand_graph(), threshold=0.04).groups.tolist() == [0, 0, 0, 0, 0]
    assert discover(hand_graph(), threshold=0.9).groups.tolist() == [0, 0, 1, 2, 3]
    assert discover(hand_graph(), threshold=0.95).groups.tolist() == [0, 1, 2, 3, 4]
    # a merge exactly at the threshold is made (levels 0.9 and 0.7 are exact in floating point)
    assert dendrogram.cut(0.9).tolist() == [0, 0, 1, 2, 3]
    assert dendrogram.merges_at(0.7) == 2 and dendrogram.merges_at(0.69) == 2 and dendrogram.merges_at(0.71) == 1


@pytest.mark.parametrize("method, levels, groups_at_half", [
    ("single", [0.9, 0.8, 0.7, 0.3], [0, 0, 0, 1, 1]),
    ("complete", [0.9, 0.7, 0.4, 0.0], [0, 0, 2, 1, 1]),
])
def test_hand_made_graph_single_and_complete_linkage(method, levels, groups_at_half):
    np.testing.assert_allclose(build_dendrogram(hand_graph(), linkage=method).levels, levels)
    assert discover(hand_graph(), threshold=0.5, linkage=method).groups.tolist() == groups_at_half


@pytest.mark.parametrize("method", LINKAGES)
def test_sparse_linkage_equals_scipy_on_the_dense_matrix_with_missing_pairs_at_the_floor(method):
    rng = np.random.default_rng(3)
    for _ in range(12):
        n = int(rng.integers(3, 30))
        graph, dense = random_graph(rng, n, density=rng.uniform(0.1, 1.0))
        ours = build_dendrogram(graph, linkage=method)
        reference = linkage(squareform(1.0 - dense, checks=False), method=method)
        np.testing.assert_allclose(np.sort(ours.levels), np.sort(1.0 - reference[:, 2]), atol=1e-12)
        z = ours.linkage_matrix()
        assert is_valid_linkage(z) and is_monotonic(z)
        for threshold in rng.uniform(0.0, 1.0, 4):
            expected = fcluster(reference, 1.0 - threshold, criterion="distance")
            groups = discover(graph, threshold=threshold, linkage=method).groups
            assert adjusted_rand_score(expected, groups) == 1.0 or len(set(expected)) == len(set(groups)) == 1
            assert np.array_equal(ours.cut(threshold), groups)  # early stop = full tree cut


@pytest.mark.parametrize("method", LINKAGES)
def test_full_linkage_equals_scipy_on_every_pair(method):
    rng = np.random.default_rng(8)
    for _ in range(8):
        n = int(rng.integers(2, 120))
        similarity = cosine_matrix(rng.standard_normal((n, int(rng.integers(2, 16))))).astype(np.float64)
        ours = full_linkage_dendrogram(similarity, linkage=method)
        distance = 1.0 - similarity
        np.fill_diagonal(distance, 0.0)
        reference = linkage(squareform(distance, checks=False), method=method)
        np.testing.assert_allclose(ours.levels, np.sort(1.0 - reference[:, 2])[::-1], atol=1e-12)
        z = ours.linkage_matrix()
        assert is_valid_linkage(z) and is_monotonic(z)
        assert np.array_equal(z[:, 3], reference[:, 3]) or method != "average" or n < 3
        for threshold in rng.uniform(-0.5, 0.9, 4):
            expected = fcluster(reference, 1.0 - threshold, criterion="distance")
            assert adjusted_rand_score(expected, ours.cut(threshold)) == 1.0 or len(set(expected)) == 1


def test_sixty_photos_of_one_new_individual_form_one_group_on_all_pairs_and_split_on_a_top_10_graph():
    # one new animal with 60 photos, spread out (within-animal cosines 0.6-0.9), and 6 others with 2-5 photos
    embeddings, labels = orthogonal_individuals([60, 5, 4, 3, 3, 2, 2], seed=11)
    unit = torch.nn.functional.normalize(embeddings, dim=1)
    cosine = (unit @ unit.T).numpy()
    same = labels[:, None] == labels[None, :]
    assert cosine[same].min() > cosine[~same].max() + 0.1  # clearly separated from the others
    # the cut is chosen on validation animals with small groups, as a small catalogue's validation holds
    validation, identities = orthogonal_individuals([5, 4, 4, 3, 3, 2], seed=12)
    threshold, ami = choose_discovery_threshold(validation, true_labels=identities)
    assert ami == pytest.approx(1.0)
    grouped = group_new_photos(embeddings, threshold=threshold)
    assert adjusted_rand_score(labels, grouped.groups) == 1.0
    assert grouped.sizes.tolist() == [60, 5, 4, 3, 3, 2, 2]
    # what a top-10 graph does with the same photos at its own best validation cut: the big animal splits
    sparse_cut, _ = choose_discovery_threshold(validation, true_labels=identities, k=10)
    sparse = group_new_photos(embeddings, threshold=sparse_cut, k=10)
    assert len(set(sparse.groups[labels == 0].tolist())) > 1


def brute_force_join(embeddings, groups, threshold):
    """Average linkage from given groups, the slow way: every round the mean cosine of every two groups over all
    their photo pairs, from the (N, N) cosine matrix; join the best while it is >= threshold."""
    cosine = cosine_matrix(embeddings).astype(np.float64)
    members = [list(np.flatnonzero(groups == g)) for g in np.unique(groups)]
    while len(members) > 1:
        best, pair = -np.inf, None
        for a in range(len(members)):
            for b in range(a + 1, len(members)):
                mean = cosine[np.ix_(members[a], members[b])].mean()
                if mean > best:
                    best, pair = mean, (a, b)
        if best < threshold:
            break
        a, b = pair
        members[a] = members[a] + members.pop(b)
    labels = np.empty(len(groups), dtype=np.int64)
    for label, photos in enumerate(members):
        labels[photos] = label
    return labels


@pytest.mark.parametrize("seed", range(6))
def test_joining_groups_equals_average_linkage_on_all_pairs_started_from_them(seed):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(8, 16))
    embeddings = centres[rng.integers(0, 8, 70)] + rng.normal(scale=1.0, size=(70, 16))
    groups = rng.integers(0, 40, 70)
    threshold = float(rng.uniform(0.0, 0.5))
    joined = join_groups(embeddings, groups, threshold=threshold, chunk_size=int(rng.integers(1, 9)))
    expected = brute_force_join(embeddings, groups, threshold)
    assert adjusted_rand_score(expected, joined) == pytest.approx(1.0)
    assert len(np.unique(joined)) == len(np.unique(expected)) < len(np.unique(groups))
    assert np.array_equal(joined, number_by_size(joined))  # numbered by size like every grouping


def test_joining_the_groups_of_a_top_10_graph_forms_sixty_photos_of_one_animal_and_never_goes_below_the_cut():
    embeddings, labels = orthogonal_individuals([60, 5, 4, 3, 3, 2, 2], seed=11)
    validation, identities = orthogonal_individuals([5, 4, 4, 3, 3, 2], seed=12)
    cut, _ = choose_discovery_threshold(validation, true_labels=identities, k=10)
    assert len(set(group_new_photos(embeddings, threshold=cut, k=10).groups[labels == 0].tolist())) > 1
    # different animals' photos are near-orthogonal (cosine < 0.2), the big animal's pairs average about 0.7
    joined = group_new_photos(embeddings, threshold=cut, k=10, join_threshold=0.3)
    assert adjusted_rand_score(labels, joined.groups) == 1.0
    assert joined.sizes.tolist() == [60, 5, 4, 3, 3, 2, 2] and joined.threshold == cut
    # a join threshold below the cut joins at the cut: nothing the graph kept apart at a strict cut comes together
    strict = group_new_photos(embeddings, threshold=0.95, k=10, join_threshold=0.3)
    assert np.array_equal(strict.groups, join_groups(embeddings, group_new_photos(
        embeddings, threshold=0.95, k=10).groups, threshold=0.95))
    assert strict.num_groups > 7


@pytest.mark.parametrize("method", LINKAGES)
def test_beyond_the_full_linkage_limit_the_components_give_the_same_groups_as_one_clustering(monkeypatch, method):
    embeddings, _ = orthogonal_individuals([25, 9, 6, 4, 3, 3, 2, 1, 1], noise=0.1, seed=14)
    similarity = cosine_matrix(embeddings)
    whole = full_linkage_dendrogram(similarity, linkage=method)
    monkeypatch.setattr(grouping, "FULL_LINKAGE_MAX_PHOTOS", 30)  # 54 photos: grouped by components
    for threshold in (0.9, 0.6, 0.45, 0.3, 0.1):
        groups = grouping.group_on_all_pairs(embeddings, threshold=threshold, linkage=method)
        assert np.array_equal(groups, whole.cut(threshold)), threshold


def test_components_above_a_cosine_equal_scipys_connected_components():
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    rng = np.random.default_rng(15)
    embeddings = rng.standard_normal((200, 6)).astype(np.float32)
    similarity = cosine_matrix(embeddings)
    for threshold in (0.99, 0.9, 0.7, 0.3):
        _, expected = connected_components(csr_matrix(similarity >= threshold), directed=False)
        ours = grouping.components_above(embeddings, threshold, chunk_size=17)
        assert adjusted_rand_score(expected, ours) == 1.0 and len(set(ours)) == len(set(expected))


def test_a_component_above_the_limit_falls_back_to_the_large_k_graph(monkeypatch):
    monkeypatch.setattr(grouping, "FULL_LINKAGE_MAX_PHOTOS", 30)
    monkeypatch.setattr(grouping, "LARGE_K", 7)
    embeddings, _ = clustered_embeddings([40], seed=13)  # one component of 40 photos at cosine 0.5
    expected = discover(similarity_graph(embeddings, k=7), threshold=0.5).groups
    assert np.array_equal(grouping.group_on_all_pairs(embeddings, threshold=0.5), expected)
    assert dendrogram_of(embeddings).levels.tolist() == build_dendrogram(similarity_graph(embeddings, k=7)
                                                                          ).levels.tolist()


def test_well_separated_individuals_are_recovered_exactly():
    sizes = [7, 3, 11, 5, 1, 9, 4, 5]
    embeddings, labels = clustered_embeddings(sizes)
    result = discover(embeddings, threshold=0.5, k=10)
    assert adjusted_rand_score(labels, result.groups) == 1.0
    assert result.num_groups == len(sizes)
    assert result.sizes.tolist() == [11, 9, 7, 5, 5, 4, 3, 1]
    # groups 3 and 4 both have 5 photos: the individual whose first photo comes first is numbered first
    first_of_five = [np.flatnonzero(labels == identity)[0] for identity in (3, 7)]
    assert result.groups[first_of_five].tolist() == [3, 4]


def test_number_by_size_orders_by_size_then_first_photo():
    assert number_by_size(["x", "y", "y", "z", "x", "w", "w"]).tolist() == [0, 1, 1, 3, 0, 2, 2]


def test_a_graph_without_edges_keeps_every_photo_apart_above_the_floor():
    graph = SimilarityGraph.from_edges(np.zeros((0, 2)), np.zeros(0), num_nodes=4, missing_score=0.0)
    assert discover(graph, threshold=0.1).groups.tolist() == [0, 1, 2, 3]
    assert build_dendrogram(graph).levels.tolist() == [0.0, 0.0, 0.0]


# ------------------------------------------------------------------------------------------------ threshold
def test_ami_of_every_cut_equals_scikit_learn():
    rng = np.random.default_rng(4)
    for _ in range(10):
        n = int(rng.integers(4, 40))
        graph, _ = random_graph(rng, n, density=rng.uniform(0.1, 0.8))
        labels = rng.integers(0, max(2, n // 4), n)
        dendrogram = build_dendrogram(graph)
        thresholds, ami = ami_per_cut(dendrogram, true_labels=labels)
        assert len(thresholds) == n  # continuous scores: every merge level is a distinct cut
        expected = [adjusted_mutual_info_score(labels, dendrogram.cut(t)) for t in thresholds]
        np.testing.assert_allclose(ami, expected, atol=1e-10)
        assert [dendrogram.merges_at(t) for t in thresholds] == list(range(n))
        threshold, best = choose_discovery_threshold(graph, true_labels=labels)
        assert best == pytest.approx(max(expected), abs=1e-10)
        assert adjusted_mutual_info_score(labels, discover(graph, threshold=threshold).groups) == pytest.approx(best)


def test_threshold_is_the_midpoint_of_the_hand_computed_best_cut():
    # merge levels 0.9, 0.7, 0.6, 0.05 (above); the identities are the groups after 3 merges, then after 2
    assert choose_discovery_threshold(hand_graph(), true_labels=list("aaabb")) == pytest.approx(((0.6 + 0.05) / 2,
                                                                                                  1.0))
    assert choose_discovery_threshold(hand_graph(), true_labels=list("aabcc")) == pytest.approx(((0.7 + 0.6) / 2,
                                                                                                  1.0))
    assert choose_discovery_threshold(hand_graph(), true_labels=list("abcde"))[0] == pytest.approx(0.9 + 1.0)
    assert choose_discovery_threshold(hand_graph(), true_labels=list("aaaaa")) == pytest.approx((0.05 - 1.0, 1.0))


def test_lowest_keeps_the_cut_at_or_above_it_and_takes_the_best_ami_there():
    # cuts of the hand graph: 1.9 (no merge), 0.8, 0.65, 0.325, -0.95; "aaabb" is best at 0.325 (3 merges)
    labels = list("aaabb")
    dendrogram = build_dendrogram(hand_graph())
    allowed = {t: adjusted_mutual_info_score(labels, dendrogram.cut(t)) for t in (1.9, 0.8, 0.65)}
    expected = max(allowed, key=allowed.get)
    assert expected == 0.65
    assert choose_discovery_threshold(hand_graph(), true_labels=labels, lowest=0.4) == pytest.approx(
        (0.65, allowed[0.65]))


def test_different_identity_floor_is_the_quantile_of_different_identity_cosines():
    from reid_lightning.inference import different_identity_floor

    rng = np.random.default_rng(16)
    embeddings = rng.standard_normal((40, 5))
    labels = rng.integers(0, 6, 40)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    cosine = unit @ unit.T
    first, second = np.triu_indices(40, 1)
    different = labels[first] != labels[second]
    expected = np.quantile(cosine[first[different], second[different]], 0.98)
    assert different_identity_floor(embeddings, true_labels=labels) == pytest.approx(expected, abs=1e-6)
    assert different_identity_floor(embeddings, true_labels=np.zeros(40)) is None


def test_ties_go_to_the_higher_threshold(monkeypatch):
    thresholds = np.array([1.5, 0.8, 0.6, 0.4, -0.5])
    monkeypatch.setattr(discovery_module, "ami_per_cut",
                        lambda dendrogram, true_labels: (thresholds, np.array([0.1, 0.5, 0.7, 0.7, 0.2])))
    assert choose_discovery_threshold(hand_graph(), true_labels=list("aabcc")) == (0.6, 0.7)


def test_validation_threshold_recovers_separated_identities_and_ignores_the_photos_to_group():
    validation, identities = clustered_embeddings([6, 4, 8, 3, 5], seed=5)
    # every within-identity cosine is far above every cross-identity cosine, so the cut separating the
    # identities exists, has AMI 1, and lies between the two ranges
    unit = torch.nn.functional.normalize(validation, dim=1)
    cosine = (unit @ unit.T).numpy()
    same = identities[:, None] == identities[None, :]
    low_within, high_across = cosine[same].min(), cosine[~same].max()
    assert low_within > high_across + 0.3
    threshold, ami = choose_discovery_threshold(validation, true_labels=identities, k=10)
    assert ami == pytest.approx(1.0)
    assert high_across < threshold < low_within
    # the photos to group never enter the choice: grouping two different sets leaves it as it was
    first_new, _ = clustered_embeddings([5, 5, 2], seed=6)
    second_new, _ = clustered_embeddings([9, 1, 1, 1, 1], seed=7)
    assert discover(first_new, threshold=threshold).num_groups == 3
    assert discover(second_new, threshold=threshold).num_groups == 5
    assert choose_discovery_threshold(validation, true_labels=identities, k=10) == (threshold, ami)
    order = np.random.default_rng(0).permutation(len(identities))
    assert choose_discovery_threshold(validation[order], true_labels=identities[order], k=10) == pytest.approx(
        (threshold, ami))
    with pytest.raises(ValueError, match="true_labels has 26 entries for a graph of 38"):
        choose_discovery_threshold(torch.cat([validation, first_new]), true_labels=identities)


# ------------------------------------------------------------------------------------------------ contact sheet
class ColourPhotos:
    """get_image(i): a 30 x 20 photo of a colour unique to i."""

    def __init__(self, n: int) -> None:
        self.colours = [(10 * i, 255 - 10 * i, (37 * i) % 256) for i in range(n)]

    def get_image(self, index: int) -> Image.Image:
        return Image.new("RGB", (30, 20), self.colours[index])


def test_contact_sheet_has_one_row_per_group_in_size_order():
    groups = np.array([5, 5, 2, 2, 2, 9, 5, 5, 1])  # sizes: 5 -> 4, 2 -> 3, 9 -> 1 (photo 5), 1 -> 1 (photo 8)
    photos = np.arange(9) + 3  # the grouped photos are dataset rows 3..11
    identities = ["A", "A", "B", "B", "C", "D", "A", "E", "F"]
    dataset = ColourPhotos(12)
    figure = contact_sheet(groups, dataset=dataset, photos=photos, identities=identities, max_photos=3,
                           thumbnail_size=40)
    labels = [ax.get_title(loc="left") for ax in figure.axes]
    assert labels == ["new_001 (4 photos, 1 not shown)", "new_002 (3 photos)", "new_003 (1 photo)",
                      "new_004 (1 photo)"]
    texts = [[text.get_text() for text in ax.texts] for ax in figure.axes]
    assert texts == [["A", "A", "A"], ["B", "B", "C"], ["D"], ["F"]]
    assert [text.get_color() for text in figure.axes[1].texts][2] != figure.axes[1].texts[0].get_color()
    # the thumbnails are the group's photos, looked up through `photos`
    cell = 40 + 6
    first_row = figure.axes[0].get_images()[0].get_array()
    centres = [tuple(int(v) for v in first_row[cell // 2, slot * cell + cell // 2]) for slot in range(3)]
    assert centres == [dataset.colours[3], dataset.colours[4], dataset.colours[9]]

    truncated = contact_sheet(groups, dataset=dataset, photos=photos, max_groups=2)
    assert [ax.get_title(loc="left") for ax in truncated.axes] == ["new_001 (4 photos)", "new_002 (3 photos)"]
    assert all(not ax.texts for ax in truncated.axes)
    assert "the 2 largest shown" in truncated._suptitle.get_text()
