"""reid_lightning.eval against hand-computed values, scikit-learn and recognite."""

import numpy as np
import pytest
import torch
from recognite import eval as reference
from sklearn.metrics import average_precision_score, precision_recall_curve
from sklearn.metrics.pairwise import cosine_similarity

from reid_lightning import eval as ev


def random_problem(num_queries=40, num_gallery=60, num_labels=8, levels=6, seed=0):
    """Scores quantised to a few levels (many ties); some query labels absent from the gallery."""
    g = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, levels, (num_queries, num_gallery), generator=g).float() / levels
    gallery_labels = torch.randint(0, num_labels, (num_gallery,), generator=g)
    query_labels = torch.randint(0, num_labels + 3, (num_queries,), generator=g)
    query_labels[0] = num_labels + 1  # always at least one open-set query
    return scores, gallery_labels, query_labels


# ---------------------------------------------------------------- hand-computed values
def test_ap_positives_at_ranks_1_and_3():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    result = ev.pr_metrics(scores, torch.tensor([1, 0, 1, 0]), torch.tensor([1]))
    assert result["AP"].item() == pytest.approx((1 + 2 / 3) / 2)
    assert result["mAP"].item() == pytest.approx(0.8333333)
    # curve stops at full recall (threshold 0.7), ascending thresholds, closing point (P=1, R=0)
    assert result["Thresholds"][0].tolist() == pytest.approx([0.7, 0.8, 0.9])
    assert result["Precisions"][0].tolist() == pytest.approx([2 / 3, 0.5, 1.0, 1.0])
    assert result["Recalls"][0].tolist() == pytest.approx([1.0, 0.5, 0.5, 0.0])
    assert result["maxF1"].item() == pytest.approx(0.8)
    assert result["T@maxF1"].item() == pytest.approx(0.7)


def test_positive_tied_with_negative_at_top_is_one_point():
    scores = torch.tensor([[0.9, 0.9, 0.1]])
    result = ev.pr_metrics(scores, torch.tensor([0, 1, 0]), torch.tensor([1]))
    assert result["Precisions"][0].tolist() == pytest.approx([0.5, 1.0])
    assert result["Recalls"][0].tolist() == pytest.approx([1.0, 0.0])
    assert result["AP"].item() == pytest.approx(0.5)
    assert result["P@maxF1"].item() == pytest.approx(0.5)


def test_tie_straddling_full_recall_keeps_the_tie_point():
    # recognite loses the last point when the last positive is tied with a negative (depends on argsort order)
    scores = torch.tensor([[0.9, 0.5, 0.5]])
    result = ev.pr_metrics(scores, torch.tensor([0, 1, 0]), torch.tensor([1]))
    assert result["AP"].item() == pytest.approx(1 / 3)
    assert result["Recalls"][0].tolist() == pytest.approx([1.0, 0.0, 0.0])
    assert result["Thresholds"][0].tolist() == pytest.approx([0.5, 0.9])


def test_query_without_positive():
    scores = torch.tensor([[0.2, 0.7, 0.4], [0.7, 0.7, 0.1]])
    result = ev.pr_metrics(scores, torch.tensor([0, 1, 2]), torch.tensor([5, 6]))
    assert result["AP"].tolist() == [0.0, 0.0]
    assert result["maxF1"].tolist() == [0.0, 0.0]
    assert result["P@maxF1"].tolist() == [0.0, 0.0]
    assert result["R@maxF1"].tolist() == [1.0, 1.0]
    assert result["T@maxF1"].tolist() == pytest.approx([0.7, 0.7])
    assert result["mAP"].item() == 0.0


def test_open_set_queries_count_in_map_unless_ignored():
    scores = torch.tensor([[0.9, 0.1], [0.9, 0.1]])
    gallery, query = torch.tensor([1, 2]), torch.tensor([1, 7])
    assert ev.pr_metrics(scores, gallery, query)["mAP"].item() == pytest.approx(0.5)
    kept = ev.pr_metrics(scores, gallery, query, ignore_queries_without_positives=True)
    assert kept["mAP"].item() == pytest.approx(1.0)
    assert len(kept["AP"]) == len(kept["Precisions"]) == 1


def test_top_k_accuracy_hand_computed_and_ties_follow_gallery_order():
    scores = torch.tensor([[0.9, 0.8, 0.7], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3]])
    gallery = torch.tensor([0, 1, 2])
    query = torch.tensor([1, 1, 9])
    # query 0: positive at rank 2; query 1: all tied, gallery order puts the positive second; query 2: none
    assert ev.accuracy(scores, gallery, query).item() == pytest.approx(0.0)
    assert ev.top_k_accuracy(scores, gallery, query, k=2).item() == pytest.approx(2 / 3)
    assert ev.top_k_accuracy(scores, gallery, query, k=3).item() == pytest.approx(2 / 3)


def test_knn_vote_tie_goes_to_best_ranked_label():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6]])
    # k=4: labels 5,3,3,5 -> two votes each; label 5 has the best neighbour
    assert ev.knn(scores, torch.tensor([5, 3, 3, 5]), k=4).tolist() == [5]
    assert ev.knn(scores, torch.tensor([5, 3, 3, 1]), k=4).tolist() == [3]
    assert ev.knn(scores, torch.tensor([7, 3, 3, 5]), k=1).tolist() == [7]


def test_hard_pos_neg_scores_drop_queries_missing_either():
    scores = torch.tensor([[0.9, 0.2, 0.5], [0.1, 0.3, 0.2], [0.4, 0.6, 0.8]])
    gallery = torch.tensor([0, 0, 1])
    query = torch.tensor([0, 5, 0])
    out = ev.hard_pos_neg_scores(scores, gallery, query)
    assert out["HardPosScores"].tolist() == pytest.approx([0.2, 0.4])
    assert out["HardNegScores"].tolist() == pytest.approx([0.5, 0.8])


def test_single_query_works():
    scores = torch.tensor([0.3, 0.9, 0.1])
    result = ev.pr_metrics(scores, torch.tensor([0, 1, 0]), torch.tensor([1]))
    assert result["AP"].tolist() == [1.0]
    assert ev.accuracy(scores, torch.tensor([0, 1, 0]), torch.tensor([1])).item() == 1.0


def test_string_labels_equal_integer_labels():
    scores, gallery, query = random_problem(seed=3)
    names = np.array([f"zebra_{i}" for i in range(20)])
    as_strings = ev.pr_metrics(scores, names[gallery.numpy()], list(names[query.numpy()]))
    as_ints = ev.pr_metrics(scores, gallery, query)
    torch.testing.assert_close(as_strings["AP"], as_ints["AP"])
    assert ev.accuracy(scores, names[gallery.numpy()], names[query.numpy()]) == ev.accuracy(scores, gallery, query)


def test_shape_mismatch_names_the_argument():
    scores = torch.rand(3, 4)
    with pytest.raises(ValueError, match="query_labels"):
        ev.pr_metrics(scores, torch.arange(4), torch.arange(4))
    with pytest.raises(ValueError, match="gallery_labels"):
        ev.pr_metrics(scores, torch.arange(3), torch.arange(3))
    with pytest.raises(ValueError, match="NaN"):
        ev.pr_metrics(torch.tensor([[float("nan"), 1.0]]), torch.arange(2), torch.arange(1))


# ---------------------------------------------------------------- references
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(40, 60), (25, 7), (3, 90)])
def test_curves_and_ap_equal_scikit_learn(seed, shape):
    scores, gallery, query = random_problem(*shape, seed=seed)
    result = ev.pr_metrics(scores, gallery, query)
    for i in range(shape[0]):
        targets = (gallery == query[i]).numpy()
        if not targets.any():
            assert result["AP"][i] == 0
            continue
        precision, recall, thresholds = precision_recall_curve(targets, scores[i].numpy())
        # scikit-learn keeps thresholds below full recall; the curve here ends once every positive is retrieved
        start = np.flatnonzero(recall == 1.0).max()
        precision, recall, thresholds = precision[start:], recall[start:], thresholds[start:]
        np.testing.assert_allclose(result["Precisions"][i].numpy(), precision, rtol=1e-6)
        np.testing.assert_allclose(result["Recalls"][i].numpy(), recall, rtol=1e-6)
        np.testing.assert_allclose(result["Thresholds"][i].numpy(), thresholds, rtol=1e-6)
        assert result["AP"][i].item() == pytest.approx(average_precision_score(targets, scores[i].numpy()))


def _recognite_is_reliable(scores, gallery, query):
    """Rows where recognite's tie handling is well defined: its curve truncation mishandles a tie group
    containing the lowest-scoring positive (or, with no positive, a tie at the top score)."""
    rows = []
    for i in range(len(query)):
        positives = gallery == query[i]
        pivot = scores[i][positives].min() if positives.any() else scores[i].max()
        rows.append(int((scores[i] == pivot).sum()) == 1)
    return torch.tensor(rows)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(40, 60), (25, 7), (3, 90)])
def test_pr_metrics_equal_recognite(seed, shape):
    scores, gallery, query = random_problem(*shape, seed=seed, levels=150)
    assert any(len(row.unique()) < len(row) for row in scores), "the problem must include ties"
    ours = ev.pr_metrics(scores, gallery, query)
    theirs = reference.pr_metrics(scores, gallery, query)
    reliable = _recognite_is_reliable(scores, gallery, query)
    assert reliable.sum() >= shape[0] // 2
    assert (~(gallery[None, :] == query[:, None]).any(1)).any(), "the problem must include open-set queries"
    for key in ("AP", "maxF1", "P@maxF1", "R@maxF1", "T@maxF1"):
        torch.testing.assert_close(ours[key][reliable], theirs[key][reliable], msg=key)
    for key in ("Precisions", "Recalls", "Thresholds"):
        for i in torch.nonzero(reliable).flatten().tolist():
            torch.testing.assert_close(ours[key][i], theirs[key][i], msg=f"{key}[{i}]")


@pytest.mark.parametrize("seed", range(3))
def test_accuracy_and_ranking_equal_recognite_without_ties(seed):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(30, 50, generator=g)
    gallery = torch.randint(0, 6, (50,), generator=g)
    query = torch.randint(0, 8, (30,), generator=g)
    for k in (1, 3, 10):
        torch.testing.assert_close(ev.top_k_accuracy(scores, gallery, query, k),
                                   reference.top_k_accuracy(scores, gallery, query, k))
        torch.testing.assert_close(ev.top_k(scores, gallery, k), reference.top_k(scores, gallery, k))
    torch.testing.assert_close(ev.accuracy(scores, gallery, query), reference.accuracy(scores, gallery, query))
    torch.testing.assert_close(ev.sort_scores(scores, gallery), reference.sort_scores(scores, gallery))
    # k=1 and odd-vote cases, where recognite's torch.mode has no tie to break
    torch.testing.assert_close(ev.knn(scores, gallery, 1), reference.knn(scores, gallery, 1))
    ref_hard = reference.hard_pos_neg_scores(scores, gallery, query % 6)
    ours_hard = ev.hard_pos_neg_scores(scores, gallery, query % 6)
    torch.testing.assert_close(ours_hard["HardPosScores"], ref_hard["HardPosScores"])
    torch.testing.assert_close(ours_hard["HardNegScores"], ref_hard["HardNegScores"])


@pytest.mark.parametrize("seed", range(3))
def test_top_k_accuracy_equals_stable_sort_definition_with_ties(seed):
    scores, gallery, query = random_problem(seed=seed, levels=3)
    _, sorted_labels = ev.sort_scores(scores, gallery)
    for k in (1, 2, 5):
        expected = (sorted_labels[:, :k] == query[:, None]).any(dim=1).float().mean()
        assert ev.top_k_accuracy(scores, gallery, query, k).item() == pytest.approx(expected.item())


def test_chunking_does_not_change_results():
    scores, gallery, query = random_problem(num_queries=33, num_gallery=50, seed=5)
    whole = ev.pr_metrics(scores, gallery, query)
    chunked = ev.pr_metrics(scores, gallery, query, elements_per_chunk=120)  # 2 rows per chunk
    for key in ("AP", "maxF1", "T@maxF1"):
        torch.testing.assert_close(whole[key], chunked[key])
    for a, b in zip(whole["Precisions"], chunked["Precisions"]):
        torch.testing.assert_close(a, b)


def test_curves_are_optional_and_do_not_change_metrics():
    scores, gallery, query = random_problem(seed=9)
    without = ev.pr_metrics(scores, gallery, query, curves=False)
    assert "Precisions" not in without
    torch.testing.assert_close(without["mAP"], ev.pr_metrics(scores, gallery, query)["mAP"])


# ---------------------------------------------------------------- scores
@pytest.mark.parametrize("metric", ["inner", "cosine", "euclid", "sq_euclid"])
def test_pairwise_scores_non_square_unequal_norms(metric):
    g = torch.Generator().manual_seed(0)
    query = torch.randn(5, 8, generator=g) * torch.arange(1, 6)[:, None]
    gallery = torch.randn(7, 8, generator=g) * 3
    scores = ev.pairwise_scores(query, gallery, metric)
    expected = {
        "inner": query @ gallery.T,
        "cosine": torch.from_numpy(cosine_similarity(query.numpy(), gallery.numpy())),
        "euclid": -torch.cdist(query.double(), gallery.double()).float(),
        "sq_euclid": -torch.cdist(query.double(), gallery.double()).pow(2).float(),
    }[metric]
    assert scores.shape == (5, 7)
    torch.testing.assert_close(scores, expected.float(), rtol=1e-4, atol=1e-4)


class _Flatten(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(12, 4)

    def forward(self, images):
        return self.linear(images.flatten(1))


@pytest.mark.parametrize("metric", ["inner", "cosine", "sq_euclid"])
def test_score_matrix_matches_recognite_and_restores_model(metric):
    g = torch.Generator().manual_seed(1)
    images = torch.randn(10, 3, 2, 2, generator=g)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 3])
    gallery_loader = torch.utils.data.DataLoader(list(zip(images[:6], labels[:6])), batch_size=4)
    query_loader = torch.utils.data.DataLoader(list(zip(images[6:], labels[6:])), batch_size=3)
    model = _Flatten().train()
    scores, gallery_labels, query_labels = ev.score_matrix(model, gallery_loader, query_loader, metric=metric,
                                                           device="cpu")
    assert model.training, "the caller's model must be left in training mode"
    model.eval()
    if metric != "cosine":  # recognite's cosine broadcasts norms over the wrong axis for non-square inputs
        expected = reference.score_matrix(model, gallery_loader, query_loader, metric=metric, device="cpu")
        torch.testing.assert_close(scores, expected[0], rtol=1e-4, atol=1e-4)
    with torch.no_grad():
        embeddings = model(images)
    torch.testing.assert_close(scores, ev.pairwise_scores(embeddings[6:], embeddings[:6], metric))
    assert gallery_labels.tolist() == labels[:6].tolist() and query_labels.tolist() == labels[6:].tolist()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_tensors():
    scores, gallery, query = random_problem(seed=2)
    on_cpu = ev.pr_metrics(scores, gallery, query)
    on_gpu = ev.pr_metrics(scores.cuda(), gallery.cuda(), query.cuda())
    torch.testing.assert_close(on_gpu["AP"].cpu(), on_cpu["AP"])
    torch.testing.assert_close(on_gpu["Precisions"][0].cpu(), on_cpu["Precisions"][0])
    assert ev.top_k_accuracy(scores.cuda(), gallery.cuda(), query.cuda(), 5).item() == pytest.approx(
        ev.top_k_accuracy(scores, gallery, query, 5).item())
    assert ev.knn(scores.cuda(), gallery.cuda(), 3).device.type == "cuda"


def test_exclude_mask_equals_removing_the_item():
    scores, gallery, query = random_problem(num_queries=12, num_gallery=12, seed=4)
    query = gallery.clone()  # leave-one-out: each item is a query against the others
    exclude = torch.eye(12, dtype=torch.bool)
    stats = ev.query_stats(scores, gallery, query, exclude=exclude)
    for i in range(12):
        others = torch.arange(12) != i
        alone = ev.query_stats(scores[i : i + 1, others], gallery[others], query[i : i + 1])
        for name in ("ap", "max_f1", "best_rank", "num_positives", "threshold_at_max_f1"):
            torch.testing.assert_close(getattr(stats, name)[i : i + 1], getattr(alone, name), msg=name)


@pytest.mark.parametrize("case", ["ties", "infinite", "signed_zero", "constant", "float64", "integers"])
def test_binned_counting_equals_brute_force_counts(case):
    from reid_lightning.eval.query_stats import retrieved_counts

    g = torch.Generator().manual_seed(7)
    scores = torch.rand(30, 500, generator=g)
    if case == "ties":
        scores = (scores * 5).round() / 5
    elif case == "infinite":
        scores[:, ::7] = float("-inf")
        scores[::3, 1] = float("inf")
    elif case == "signed_zero":
        scores = torch.where(scores < 0.5, torch.tensor(-0.0), torch.tensor(0.0))
    elif case == "constant":
        scores = torch.full_like(scores, 0.25)
    elif case == "float64":
        scores = scores.double()
    elif case == "integers":
        scores = (scores * 20).long()
    targets = torch.rand(30, 500, generator=g) < 0.05
    targets[0] = False  # a query without positives
    work = scores.double() if not scores.is_floating_point() else scores
    npos = targets.sum(1)
    positive_sorted = torch.where(targets, work, float("inf")).sort(dim=1).values[:, : int(npos.max())]
    valid = torch.arange(positive_sorted.shape[1])[None, :] < npos[:, None]

    def brute_force(values, positives):
        # items scoring at least each positive, counted by direct comparison (0 for padding)
        at_least = (values[:, None, :] >= positives[:, :, None]).sum(dim=2)
        return torch.where(valid, at_least, 0)

    torch.testing.assert_close(retrieved_counts(work, positive_sorted, valid), brute_force(work, positive_sorted))
    torch.testing.assert_close(retrieved_counts(work.float(), positive_sorted.float(), valid, num_bins=3),
                               brute_force(work.float(), positive_sorted.float()))
