"""Widening a weak global shortlist with a cheap local stage: ``RetrievalResults.promote``, ``IdentityWidening`` and
``PairwiseReranker(widening=...)``, by hand and on synthetic scores where only local matching knows the answer."""

import numpy as np
import pytest
import torch

from reid_lightning.retrieval import RetrievalResults
from reid_lightning.similarity import IdentityWidening, PairwiseReranker


def test_promote_moves_marked_candidates_first_keeping_order_and_scores():
    scores = torch.tensor([[0.9, 0.8, 0.7, 0.6, 0.5]])
    results = RetrievalResults.from_scores(scores, gallery_labels=[0, 1, 2, 3, 1], query_labels=[1])
    promoted = results.promote(torch.tensor([[False, False, True, False, True]]))
    assert promoted.candidate_indices.tolist() == [[2, 4, 0, 1, 3]]
    assert promoted.candidate_scores[0].tolist() == pytest.approx([0.7, 0.5, 0.9, 0.8, 0.6])
    # statistics of the new order: identity 1 at ranks 2 and 4 -> AP = (1/2 + 2/4) / 2, first hit at rank 2
    metrics = promoted.metrics(top_k=(1, 2))
    assert metrics["top1"] == 0.0 and metrics["top2"] == 1.0
    assert metrics["mAP"] == pytest.approx(0.5)
    assert results.candidate_indices.tolist() == [[0, 1, 2, 3, 4]]  # the original is unchanged


def test_promote_rejects_a_mask_of_another_shape():
    results = RetrievalResults.from_scores(torch.rand(2, 3), gallery_labels=[0, 1, 2])
    with pytest.raises(ValueError, match="one flag per candidate slot"):
        results.promote(torch.zeros(2, 2, dtype=torch.bool))


def test_representatives_are_each_querys_best_ranked_images_per_identity():
    # gallery identities 0 0 1 1 1 2; the query ranks them 1 0 1 2 0 1 (indices 2 0 3 5 1 4)
    scores = torch.tensor([[0.5, 0.2, 0.9, 0.7, 0.1, 0.6]])
    results = RetrievalResults.from_scores(scores, gallery_labels=[0, 0, 1, 1, 1, 2])
    assert results.candidate_indices.tolist() == [[2, 3, 5, 0, 1, 4]]
    one = IdentityWidening(per_identity=1).representatives(results)
    assert one.tolist() == [[True, False, True, True, False, False]]  # first of identity 1, of 2, of 0
    two = IdentityWidening(per_identity=2).representatives(results)
    assert two.tolist() == [[True, True, True, True, True, False]]


def test_shortlist_keeps_the_global_head_then_spans_identities_by_local_score():
    # candidates in global order: identities 1 1 2 0 3 0 2 3
    labels = [1, 1, 2, 0, 3, 0, 2, 3]
    scores = torch.linspace(1, 0, len(labels))[None]
    results = RetrievalResults.from_scores(scores, gallery_labels=labels)
    widening = IdentityWidening(keep=1, per_identity=1)
    representatives = widening.representatives(results)
    assert representatives.tolist() == [[True, False, True, True, True, False, False, False]]
    local = torch.full((1, 8), float("nan"))
    local[0, 0], local[0, 2], local[0, 3], local[0, 4] = 5.0, 1.0, 40.0, float("nan")  # identity 3: unscored
    # keep slot 0; then the best-ranked image of each identity by local rank: identity 0 (40: slot 3), identity 1
    # (5: slot 0, kept already), identity 2 (1: slot 2), identity 3 (unscored: slot 4); then second images
    mask = widening.shortlist_mask(results, local, shortlist=4)
    assert mask.tolist() == [[True, False, True, True, True, False, False, False]]
    widened = results.promote(mask)
    assert widened.candidate_indices[0, :4].tolist() == [0, 2, 3, 4]
    # a longer shortlist goes on with second images in the same identity order: identity 0 (slot 5), 1 (slot 1)
    assert widening.shortlist_mask(results, local, shortlist=6).tolist() == [
        [True, True, True, True, True, True, False, False]]
    assert IdentityWidening(keep=0).shortlist_mask(results, local, shortlist=3).tolist() == [
        [True, False, True, True, False, False, False, False]]


def test_widening_needs_the_whole_ranking():
    results = RetrievalResults.from_scores(torch.rand(2, 6), gallery_labels=[0, 0, 1, 1, 2, 2], k=3)
    with pytest.raises(ValueError, match="--model.candidates 6"):
        IdentityWidening().shortlist_mask(results, torch.zeros(2, 3), shortlist=2)


class LocalOracle:
    """A local scorer that knows the truth: the number of matches is high for pairs of one identity (with noise)."""

    name = "oracle"

    def __init__(self, query_labels, gallery_labels, seed=0):
        self.query_labels, self.gallery_labels = np.asarray(query_labels), np.asarray(gallery_labels)
        self.rng = np.random.default_rng(seed)
        self.pairs = 0

    def score(self, query_dataset, gallery_dataset, pairs):
        pairs = pairs.numpy()
        self.pairs += len(pairs)
        same = self.query_labels[pairs[:, 0]] == self.gallery_labels[pairs[:, 1]]
        return {"oracle": torch.tensor(self.rng.poisson(5 + 30 * same), dtype=torch.float32)}


def split(seed, identities=30, per_identity=3, queries=120):
    """A gallery and queries whose global scores are noise: the global model knows nothing."""
    rng = np.random.default_rng(seed)
    gallery_labels = np.repeat(np.arange(identities), per_identity)
    query_labels = rng.integers(0, identities, queries)
    scores = torch.tensor(rng.normal(size=(queries, len(gallery_labels))), dtype=torch.float32)
    results = RetrievalResults.from_scores(scores, gallery_labels=gallery_labels, query_labels=query_labels)
    return results, query_labels, gallery_labels


@pytest.mark.parametrize("keep", [0, 3])
def test_a_widened_shortlist_lets_local_matching_find_what_the_global_model_misses(keep):
    validation, val_labels, gallery_labels = split(0)
    test, test_labels, _ = split(1)
    results = {}
    for widening in (None, IdentityWidening(keep=keep)):
        reranker = PairwiseReranker([LocalOracle(val_labels, gallery_labels)], shortlist=6, widening=widening,
                                    progress=False)
        reranker.fit(validation, None, None)
        reranker.scorers = [LocalOracle(test_labels, gallery_labels, seed=1)]
        results[widening is not None] = reranker(test, None, None)
    global_top1 = test.metrics()["top1"]
    plain, widened = results[False].metrics()["top1"], results[True].metrics()["top1"]
    # without widening, reranking is capped by the global recall@6 (about 6 / 90 gallery images x 3 positives)
    recall_at_6 = float(test.hits[:, :6].any(dim=1).float().mean())
    assert plain <= recall_at_6 + 1e-9 and recall_at_6 < 0.4
    # widened, every identity was matched once: local matching finds nearly every query's identity
    assert widened >= 0.95 and widened > plain > global_top1 - 0.1


def test_widening_costs_one_pair_per_identity_and_query():
    test, test_labels, gallery_labels = split(1, identities=30, per_identity=3, queries=40)
    scorer = LocalOracle(test_labels, gallery_labels)
    reranker = PairwiseReranker([scorer], shortlist=6, widening=IdentityWidening(keep=2), progress=False)
    reranker.widened_shortlist(test, None, None)
    assert scorer.pairs == 40 * 30


def test_widening_is_saved_with_the_calibrators_and_must_match(tmp_path):
    validation, val_labels, gallery_labels = split(0)
    reranker = PairwiseReranker([LocalOracle(val_labels, gallery_labels)], shortlist=6,
                                widening=IdentityWidening(keep=2), progress=False)
    reranker.fit(validation, None, None).save(tmp_path)
    same = PairwiseReranker([LocalOracle(val_labels, gallery_labels)], shortlist=6,
                            widening=IdentityWidening(keep=2), progress=False).load(tmp_path)
    assert same.widening.settings() == {"keep": 2, "per_identity": 1, "score": None}
    with pytest.raises(ValueError, match="widened by"):
        PairwiseReranker([LocalOracle(val_labels, gallery_labels)], shortlist=6, progress=False).load(tmp_path)


def test_widening_needs_a_local_scorer():
    with pytest.raises(ValueError, match="needs a local scorer"):
        PairwiseReranker([], widening=IdentityWidening())


def test_the_callback_refuses_an_automatic_shortlist_with_widening():
    from reid_lightning.callbacks import LocalFeatureReranking

    with pytest.raises(ValueError, match="give the shortlist size with widening"):
        LocalFeatureReranking([LocalOracle([0], [0])], shortlist="auto", widening=IdentityWidening())
