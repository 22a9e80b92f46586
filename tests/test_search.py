"""``search`` → ``RetrievalResults``: candidates and metrics against brute force, exclusions, reranked metrics."""

import numpy as np
import pytest
import torch

from reid_lightning import eval as ev
from reid_lightning.inference import KnnClassifier, TopkClassifier
from reid_lightning.retrieval import Exclusion, search


def tied_problem(seed=0, num_queries=23, num_gallery=31):
    g = torch.Generator().manual_seed(seed)
    # integer-valued embeddings with few distinct values: many exactly tied inner products
    query = torch.randint(-2, 3, (num_queries, 4), generator=g).float()
    gallery = torch.randint(-2, 3, (num_gallery, 4), generator=g).float()
    query_labels = torch.randint(0, 7, (num_queries,), generator=g)
    gallery_labels = torch.randint(0, 6, (num_gallery,), generator=g)
    return query, gallery, query_labels, gallery_labels


def brute_force(scores, gallery_labels, query_labels, exclude, k):
    """Per query: drop excluded columns, stable full sort, first k; metrics from the eval functions."""
    indices, aps, top1, top5 = [], [], [], []
    for row in range(len(scores)):
        keep = torch.nonzero(~exclude[row]).flatten()
        order = torch.sort(scores[row, keep], descending=True, stable=True).indices
        ranked = keep[order][:k].tolist()
        indices.append(ranked + [-1] * (k - len(ranked)))
        one = scores[row : row + 1, keep]
        aps.append(ev.pr_metrics(one, gallery_labels[keep], query_labels[row : row + 1], curves=False)["AP"].item())
        top1.append(ev.top_k_accuracy(one, gallery_labels[keep], query_labels[row : row + 1], 1).item())
        top5.append(ev.top_k_accuracy(one, gallery_labels[keep], query_labels[row : row + 1], 5).item())
    return torch.tensor(indices), {"mAP": np.mean(aps), "top1": np.mean(top1), "top5": np.mean(top5)}


@pytest.mark.parametrize("chunk_size", [1, 4, None])
@pytest.mark.parametrize("with_exclusion", [False, True])
def test_search_equals_full_sort_with_ties_and_exclusions(chunk_size, with_exclusion):
    query, gallery, query_labels, gallery_labels = tied_problem()
    scores = query @ gallery.T
    exclude = torch.zeros_like(scores, dtype=torch.bool)
    if with_exclusion:
        exclude = torch.rand(scores.shape, generator=torch.Generator().manual_seed(1)) < 0.3
        exclude[0] = True  # a query whose whole gallery is excluded: empty slots only
        exclude[0, 5] = False
    k = 7
    results = search(query, gallery, k=k, metric="inner", exclude=exclude if with_exclusion else None,
                     query_labels=query_labels, gallery_labels=gallery_labels, chunk_size=chunk_size)
    expected_indices, expected = brute_force(scores, gallery_labels, query_labels, exclude, k)
    assert torch.equal(results.candidate_indices, expected_indices)
    valid = expected_indices >= 0
    torch.testing.assert_close(results.candidate_scores[valid], scores.gather(1, expected_indices.clamp(min=0))[valid])
    assert (results.candidate_scores[~valid] == float("-inf")).all()
    metrics = results.metrics(top_k=(1, 5))
    for name in ("mAP", "top1", "top5"):
        assert metrics[name] == pytest.approx(expected[name], abs=1e-6), name
    assert metrics["excluded_pairs"] == int(exclude.sum()) if with_exclusion else metrics["excluded_pairs"] == 0
    # excluded pairs are never candidates
    rows = torch.arange(len(query))[:, None].expand_as(results.candidate_indices)
    assert not exclude[rows[valid], results.candidate_indices[valid]].any()


def test_pairs_and_mask_exclusions_agree_and_cosine_matches_pairwise_scores():
    query, gallery, query_labels, gallery_labels = tied_problem(seed=3)
    query, gallery = query + 0.1 * torch.randn_like(query), gallery + 0.1 * torch.randn_like(gallery)
    mask = torch.rand(len(query), len(gallery)) < 0.2
    by_mask = search(query, gallery, k=5, exclude=mask, query_labels=query_labels, gallery_labels=gallery_labels)
    by_pairs = search(query, gallery, k=5, exclude=mask.nonzero(), query_labels=query_labels,
                      gallery_labels=gallery_labels, chunk_size=3)
    assert torch.equal(by_mask.candidate_indices, by_pairs.candidate_indices)
    assert by_mask.metrics() == by_pairs.metrics()
    cosine = ev.pairwise_scores(query, gallery, "cosine").masked_fill(mask, float("-inf"))
    expected = torch.sort(cosine, dim=1, descending=True, stable=True)
    torch.testing.assert_close(by_mask.candidate_scores, expected.values[:, :5])


@pytest.mark.parametrize("backend", ["torch", "faiss"])
def test_embeddings_with_nan_inf_or_an_overflowing_norm_are_refused_with_their_counts(backend):
    query, gallery, query_labels, gallery_labels = tied_problem()
    query[3, 0] = float("nan")
    gallery[[0, 5], 1] = float("inf")
    gallery[7] = 1e30  # finite entries whose float32 norm overflows: cosine would silently be 0
    with pytest.raises(ValueError, match=r"1 of 23 query and 3 of 31 gallery embeddings are not finite"):
        search(query, gallery, k=5, query_labels=query_labels, gallery_labels=gallery_labels, backend=backend)


def test_same_group_exclusion_matches_hand_built_mask():
    query_groups = torch.tensor([0, -1, 2, 2, 5])
    gallery_groups = torch.tensor([2, 0, -1, 2, 0, 7, -1])
    exclusion = Exclusion.same_group(query_groups=query_groups, gallery_groups=gallery_groups)
    expected = (query_groups[:, None] == gallery_groups[None, :]) & (query_groups[:, None] >= 0)
    assert torch.equal(exclusion.mask(slice(0, 5)), expected)
    assert torch.equal(exclusion.mask(slice(2, 4)), expected[2:4])
    assert exclusion.mask(slice(1, 2)) is None  # query 1 has no group
    assert exclusion.per_query().tolist() == expected.sum(1).tolist()
    union = exclusion.union(Exclusion.from_mask(torch.eye(5, 7, dtype=torch.bool)))
    assert torch.equal(union.mask(slice(0, 5)), expected | torch.eye(5, 7, dtype=torch.bool))
    selected = exclusion.select(torch.tensor([3, 0]))
    assert torch.equal(selected.mask(slice(0, 2)), expected[[3, 0]])


def test_reranked_metrics_equal_metrics_of_the_new_full_ranking():
    query, gallery, query_labels, gallery_labels = tied_problem(seed=5)
    scores = query @ gallery.T
    exclude = torch.rand(scores.shape, generator=torch.Generator().manual_seed(2)) < 0.1
    results = search(query, gallery, k=10, metric="inner", exclude=exclude, query_labels=query_labels,
                     gallery_labels=gallery_labels, chunk_size=5)
    new = torch.rand(len(query), 6, generator=torch.Generator().manual_seed(4))
    new[1, 2] = float("nan")
    reranked = results.rerank(new)
    # by hand: a score matrix where the re-sorted shortlist is above everything and the rest keeps its scores
    expected = scores.clone()
    for row in range(len(query)):
        head = reranked.candidate_indices[row, :6]
        head = head[head >= 0]
        top = scores[row][~exclude[row]].max()
        expected[row, head] = top + torch.arange(len(head), 0, -1).float()
    _, expected_metrics = brute_force(expected, gallery_labels, query_labels, exclude, 10)
    metrics = reranked.metrics(top_k=(1, 5))
    for name in ("mAP", "top1", "top5"):
        assert metrics[name] == pytest.approx(expected_metrics[name], abs=1e-6), name
    # the reranked shortlist is ordered by the new scores, the unscored pair last among the shortlist
    first = reranked.candidate_indices[0, :6].tolist()
    by_new = [results.candidate_indices[0, j].item() for j in torch.argsort(new[0], descending=True).tolist()]
    assert first == by_new
    assert reranked.candidate_indices[1, 5].item() == results.candidate_indices[1, 2].item()


def test_names_select_and_frame_with_string_labels():
    query = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    gallery = torch.tensor([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3]])
    results = search(query, gallery, k=2, gallery_labels=["zara", "bo", "zara"], query_labels=["bo", "zara"])
    assert results.candidate_identities.tolist() == [["zara", "zara"], ["bo", "zara"]]
    assert results.hits.tolist() == [[False, False], [False, True]]
    second = results.select([1])
    assert second.candidate_indices.tolist() == [[1, 2]]
    assert second.metrics(top_k=(1, 2))["top2"] == 1.0 and results.metrics(top_k=(1, 2))["top1"] == 0.0
    frame = results.to_frame(query_ids=["q0", "q1"], gallery_ids=["a.jpg", "b.jpg", "c.jpg"])
    assert frame[["query", "rank", "gallery", "identity", "query_identity", "hit"]].values.tolist() == [
        ["q0", 1, "a.jpg", "zara", "bo", False], ["q0", 2, "c.jpg", "zara", "bo", False],
        ["q1", 1, "b.jpg", "bo", "zara", False], ["q1", 2, "c.jpg", "zara", "zara", True],
    ]
    with pytest.raises(ValueError, match="gallery_labels"):
        search(query, gallery, k=2, gallery_labels=["a", "b"])


def test_classifiers_give_identical_answers_from_results_and_from_the_matrix():
    query, gallery, _, gallery_labels = tied_problem(seed=7)
    names = np.array(["ann", "bob", "cy", "dora", "ed", "fay"])[gallery_labels.numpy()]
    scores = query @ gallery.T
    full = search(query, gallery, k=len(gallery), metric="inner", gallery_labels=names)
    short = search(query, gallery, k=12, metric="inner", gallery_labels=names)
    for k in (1, 3, 5):
        knn = KnnClassifier(database_labels=names, k=k, return_scores=True)
        expected = knn(scores)
        for results in (full, short):
            labels, values = knn(results)
            assert (labels == expected[0]).all() and np.allclose(values, expected[1])
    topk = TopkClassifier(database_labels=names, k=8, return_all=True)  # 8 > 6 identities: 6 columns
    expected = topk(scores)
    labels, values, indices = topk(full)
    assert labels.shape == (len(query), 6)
    assert (labels == expected[0]).all() and np.array_equal(indices, expected[2])
    np.testing.assert_allclose(values, expected[1])
    with pytest.raises(ValueError, match="larger k"):
        TopkClassifier(database_labels=names, k=6)(search(query, gallery, k=2, metric="inner", gallery_labels=names))


@pytest.mark.parametrize("backend", ["faiss", "faiss-ivf", "faiss-hnsw"])
@pytest.mark.parametrize("metric", ["cosine", "inner", "euclid"])
def test_faiss_backends_return_the_torch_top_k(backend, metric):
    g = torch.Generator().manual_seed(11)
    query, gallery = torch.randn(60, 12, generator=g), torch.randn(500, 12, generator=g)
    query_labels, gallery_labels = torch.randint(0, 40, (60,), generator=g), torch.randint(0, 40, (500,), generator=g)
    exclude = torch.rand(60, 500, generator=g) < 0.05
    options = {"k": 10, "metric": metric, "exclude": exclude, "gallery_labels": gallery_labels}
    exact = search(query, gallery, query_labels=query_labels, **options)
    indexed = search(query, gallery, query_labels=query_labels, backend=backend, **options)
    # continuous random data: no ties, so the candidate lists must agree (approximate indexes: nearly always)
    agreement = (indexed.candidate_indices == exact.candidate_indices).float().mean().item()
    assert agreement == 1.0 if backend == "faiss" else agreement > 0.9
    same = indexed.candidate_indices == exact.candidate_indices
    torch.testing.assert_close(indexed.candidate_scores[same], exact.candidate_scores[same], atol=1e-5, rtol=1e-5)
    assert indexed.metrics() == exact.metrics()  # full-ranking metrics stay exact
    # without labels no score block is computed, the candidates are the same
    unlabelled = search(query, gallery, backend=backend, **options)
    assert torch.equal(unlabelled.candidate_indices, indexed.candidate_indices)
    valid = indexed.candidate_indices >= 0
    rows = torch.arange(60)[:, None].expand_as(valid)
    assert not exclude[rows[valid], indexed.candidate_indices[valid]].any()


def test_candidates_without_labels_come_from_merged_gallery_tiles(monkeypatch):
    import reid_lightning.retrieval.scores as scores_module

    query, gallery, query_labels, gallery_labels = tied_problem(seed=9, num_queries=17, num_gallery=45)
    exclude = torch.rand(17, 45, generator=torch.Generator().manual_seed(3)) < 0.2
    with_rows = search(query, gallery, k=9, metric="inner", exclude=exclude, query_labels=query_labels,
                       gallery_labels=gallery_labels)
    monkeypatch.setattr(scores_module, "ELEMENTS_PER_TILE", 40)  # tiles of a few gallery items
    tiled = search(query, gallery, k=9, metric="inner", exclude=exclude, gallery_labels=gallery_labels,
                   chunk_size=5)
    expected, _ = brute_force(query @ gallery.T, gallery_labels, query_labels, exclude, 9)
    assert torch.equal(with_rows.candidate_indices, expected)
    assert torch.equal(tiled.candidate_indices, expected)
    torch.testing.assert_close(tiled.candidate_scores, with_rows.candidate_scores)


def test_cosine_candidates_from_reused_tile_buffers_equal_full_rows(monkeypatch):
    import reid_lightning.retrieval.scores as scores_module

    query, gallery, query_labels, gallery_labels = tied_problem(seed=4, num_queries=13, num_gallery=50)
    with_rows = search(query, gallery, k=6, query_labels=query_labels, gallery_labels=gallery_labels)
    # 13 queries in chunks of 5, 5, 3: tiles of 8, 8 and 13 columns, the last tile of each chunk narrower
    monkeypatch.setattr(scores_module, "ELEMENTS_PER_TILE", 40)
    tiled = search(query, gallery, k=6, gallery_labels=gallery_labels, chunk_size=5)
    assert torch.equal(tiled.candidate_indices, with_rows.candidate_indices)
    torch.testing.assert_close(tiled.candidate_scores, with_rows.candidate_scores)
    cosine = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    torch.testing.assert_close(tiled.candidate_scores, cosine.gather(1, tiled.candidate_indices))
