"""The retrieval-results object: ranking, metrics and reranking order (shortlist above the tail)."""

import math

import pytest
import torch

from reid_lightning.retrieval import RetrievalResults


def make_results(**kwargs):
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.5, 0.5, 0.9, 0.2]])
    gallery = torch.tensor([0, 1, 2, 3, 4])
    query = torch.tensor([2, 0])
    return RetrievalResults.from_scores(scores, gallery_labels=gallery, query_labels=query, **kwargs), scores


def test_from_scores_ranks_with_stable_ties_and_hand_computed_metrics():
    results, _ = make_results(k=4)
    assert results.candidate_indices.tolist() == [[0, 1, 2, 3], [3, 1, 2, 4]]
    assert results.candidate_labels.tolist() == [[0, 1, 2, 3], [3, 1, 2, 4]]
    metrics = results.metrics(top_k=(1, 3))
    # query 0 (identity 2) finds its one positive at rank 3: AP 1/3, best F1 at rank 3 = 2 * (1/3) / (4/3) = 1/2;
    # query 1 (identity 0) at rank 5 (its score 0.1 is the lowest): AP 1/5, best F1 = 2 * (1/5) / (6/5) = 1/3
    assert metrics["mAP"] == pytest.approx((1 / 3 + 1 / 5) / 2)
    assert metrics["maxF1"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    assert metrics["top1"] == 0 and metrics["top3"] == pytest.approx(0.5)


def test_rerank_sorts_shortlist_above_untouched_tail():
    results, _ = make_results(k=5)
    # new scores for the first 3 candidates of each query
    reranked = results.rerank(torch.tensor([[0.1, 0.2, 0.95], [0.3, float("nan"), 0.3]]))
    assert reranked.candidate_indices.tolist() == [[2, 1, 0, 3, 4], [3, 2, 1, 4, 0]]
    # query 0 (label 2) now finds its match first; the tail (3, 4) keeps its order below the shortlist
    after = reranked.metrics(top_k=(1,))
    assert after["top1"] == pytest.approx(0.5)
    assert results.metrics(top_k=(1,))["top1"] == 0.0
    full = reranked.source.block(slice(None))
    assert full[0, 2] > full[0, 1] > full[0, 0] > full[0, 3] > full[0, 4]
    # equal new scores keep their previous order; the unscored pair (gallery 1) is last of the shortlist
    assert full[1, 3] > full[1, 2] > full[1, 1] > full[1, 4] > full[1, 0]
    assert math.isnan(reranked.candidate_scores[1, 2].item())
    assert results.candidate_indices.tolist()[0] == [0, 1, 2, 3, 4], "the original object must not change"


def test_rerank_keeps_shortlist_above_items_outside_candidates():
    results, _ = make_results(k=2)
    reranked = results.rerank(torch.tensor([[0.0, 0.0], [0.0, 0.0]]))
    full = reranked.source.block(slice(None))
    for row in range(2):
        head = reranked.candidate_indices[row, :2]
        rest = torch.ones(5, dtype=torch.bool)
        rest[head] = False
        assert full[row, head].min() > full[row, rest].max()


def test_rerank_rejects_wrong_shape():
    results, _ = make_results(k=2)
    with pytest.raises(ValueError, match="shortlist_scores"):
        results.rerank(torch.zeros(2, 3))


def test_leave_one_out_exclusion_never_returns_self():
    scores = torch.tensor([[1.0, 0.2, 0.3], [0.2, 1.0, 0.9], [0.3, 0.9, 1.0]])
    labels = torch.tensor([0, 1, 1])
    results = RetrievalResults.from_scores(scores, gallery_labels=labels, query_labels=labels,
                                           exclude=torch.eye(3, dtype=torch.bool))
    # with k = G each query has one slot left empty: the excluded item is never a candidate
    assert results.candidate_indices.tolist() == [[2, 1, -1], [2, 0, -1], [1, 0, -1]]
    metrics = results.metrics(top_k=(1,))
    assert metrics["top1"] == pytest.approx(2 / 3)
    assert metrics["queries_without_positives"] == 1
