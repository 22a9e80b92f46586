"""Metrics from the top-K candidates only (``exact_metrics=False``): hand-computed AP@K / maxF1@K, exact when K
covers the gallery, exclusions, reranking, and no full score row computed."""

import numpy as np
import pytest
import torch

from reid_lightning.retrieval import Exclusion, search
from reid_lightning.retrieval.scores import EmbeddingScores


def random_problem(seed=0, num_queries=19, num_gallery=40, dim=8, identities=6):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(num_queries, dim, generator=g), torch.randn(num_gallery, dim, generator=g),
            torch.randint(0, identities, (num_queries,), generator=g),
            torch.randint(0, identities, (num_gallery,), generator=g))


def hand_truncated(order_hits: list[bool], num_positives: int, depth: int) -> tuple[float, float]:
    """AP@K and maxF1@K of one ranking (no ties) from its hit sequence, by the textbook definitions."""
    ap, best_f1, found = 0.0, 0.0, 0
    for rank, hit in enumerate(order_hits[:depth], start=1):
        if hit:
            found += 1
            precision, recall = found / rank, found / num_positives
            ap += precision / num_positives
            best_f1 = max(best_f1, 2 * precision * recall / (precision + recall))
    return ap, best_f1


@pytest.mark.parametrize("depth", [3, 10])
def test_truncated_ap_and_max_f1_equal_hand_computation(depth):
    query, gallery, query_labels, gallery_labels = random_problem()
    exclude = torch.rand(19, 40, generator=torch.Generator().manual_seed(5)) < 0.15
    results = search(query, gallery, k=depth, exclude=exclude, query_labels=query_labels,
                     gallery_labels=gallery_labels, exact_metrics=False)
    exact = search(query, gallery, k=depth, exclude=exclude, query_labels=query_labels,
                   gallery_labels=gallery_labels)
    scores = torch.nn.functional.normalize(query, dim=1) @ torch.nn.functional.normalize(gallery, dim=1).T
    aps, f1s = [], []
    for row in range(len(query)):
        keep = torch.nonzero(~exclude[row]).flatten()
        order = keep[torch.argsort(scores[row, keep], descending=True)]
        hits = (gallery_labels[order] == query_labels[row]).tolist()
        num_positives = sum(hits)
        ap, f1 = hand_truncated(hits, num_positives, depth) if num_positives else (0.0, 0.0)
        aps.append(ap)
        f1s.append(f1)
    metrics, exact_metrics = results.metrics(top_k=(1, depth)), exact.metrics(top_k=(1, depth))
    assert metrics[f"mAP@{depth}"] == pytest.approx(np.mean(aps), abs=1e-6)
    assert metrics[f"maxF1@{depth}"] == pytest.approx(np.mean(f1s), abs=1e-6)
    assert "mAP" not in metrics and "maxF1" not in metrics  # never mistaken for the full-ranking values
    # lower bounds of the full-ranking values; top-k accuracies up to K are exact
    assert metrics[f"mAP@{depth}"] <= exact_metrics["mAP"] + 1e-6
    assert metrics[f"maxF1@{depth}"] <= exact_metrics["maxF1"] + 1e-6
    for name in ("top1", f"top{depth}", "num_queries", "queries_without_positives", "excluded_pairs"):
        assert metrics[name] == exact_metrics[name], name
    if depth == 3:
        assert metrics["mAP@3"] < exact_metrics["mAP"]  # positives beyond the list are missing on this data


def test_candidate_statistics_equal_the_full_ranking_when_the_list_holds_every_rankable_item():
    g = torch.Generator().manual_seed(2)
    # integer embeddings: many tied scores
    query = torch.randint(-2, 3, (15, 4), generator=g).float()
    labels = torch.randint(0, 4, (15,), generator=g)
    # leave-one-out: every image against the others, itself excluded (K = G - 1 rankable items)
    approximate = search(query, query, k=15, metric="inner", exclude=Exclusion.self_pairs(15), query_labels=labels,
                         gallery_labels=labels, exact_metrics=False)
    exact = search(query, query, k=15, metric="inner", exclude=Exclusion.self_pairs(15), query_labels=labels,
                   gallery_labels=labels)
    for field in ("ap", "max_f1", "precision_at_max_f1", "recall_at_max_f1", "threshold_at_max_f1", "best_rank",
                  "num_positives"):
        torch.testing.assert_close(getattr(approximate.stats, field), getattr(exact.stats, field), msg=field)


def test_top_k_beyond_the_candidate_depth_is_refused():
    query, gallery, query_labels, gallery_labels = random_problem()
    results = search(query, gallery, k=4, query_labels=query_labels, gallery_labels=gallery_labels,
                     exact_metrics=False)
    with pytest.raises(ValueError, match="top-4 candidates"):
        results.metrics(top_k=(1, 5))


def test_reranked_candidate_statistics_follow_the_new_order():
    query, gallery, query_labels, gallery_labels = random_problem(seed=3)
    results = search(query, gallery, k=8, query_labels=query_labels, gallery_labels=gallery_labels,
                     exact_metrics=False)
    # new scores that reverse each query's first 5 candidates
    reranked = results.rerank(torch.arange(5, dtype=torch.float32).expand(len(query), 5).clone())
    positives = (query_labels[:, None] == gallery_labels[None, :]).sum(dim=1)
    aps = []
    for row in range(len(query)):
        order = reranked.candidate_indices[row]
        assert order[:5].tolist() == results.candidate_indices[row, :5].flip(0).tolist()
        hits = (gallery_labels[order] == query_labels[row]).tolist()
        aps.append(hand_truncated(hits, int(positives[row]), 8)[0] if positives[row] else 0.0)
    assert reranked.metrics(top_k=(1,))["mAP@8"] == pytest.approx(np.mean(aps), abs=1e-6)


@pytest.mark.parametrize("backend", ["torch", "faiss-ivf"])
def test_candidate_metrics_never_compute_a_full_score_row(backend, monkeypatch):
    if backend.startswith("faiss"):
        pytest.importorskip("faiss")
    query, gallery, query_labels, gallery_labels = random_problem(num_gallery=300)
    expected = search(query, gallery, k=10, query_labels=query_labels, gallery_labels=gallery_labels,
                      backend=backend, exact_metrics=False).metrics()

    def no_full_rows(self, rows, columns=slice(None)):
        raise AssertionError("a full score row was computed")

    monkeypatch.setattr(EmbeddingScores, "block", no_full_rows)
    results = search(query, gallery, k=10, query_labels=query_labels, gallery_labels=gallery_labels,
                     backend=backend, exact_metrics=False)
    assert results.metrics() == expected
