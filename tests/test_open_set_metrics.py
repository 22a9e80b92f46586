"""Open-set metrics (BAKS, BAUS, gmean, AUROC) against hand computations and scikit-learn; threshold choice."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from reid_lightning.inference import held_out_gallery_identities, top1_decision_inputs
from reid_lightning.metrics import OpenSetMetrics, choose_threshold, open_set_metrics
from reid_lightning.retrieval import RetrievalResults

# gallery identities 0 (A), 1 (B), 2 (C); queries: A x3 (several images), B x1 (one image), unknown D (3) x2,
# unknown E (4) x1
QUERY = torch.tensor([0, 0, 0, 1, 3, 3, 4])
KNOWN = torch.tensor([True, True, True, True, False, False, False])
TOP1 = torch.tensor([0, 1, 0, 1, 0, 2, 1])
SCORES = torch.tensor([0.9, 0.8, 0.3, 0.7, 0.2, 0.6, 0.1])


def test_metrics_equal_a_hand_computation():
    values = open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES, threshold=0.5)
    # A: q0 right, q1 wrong identity, q2 answered new -> 1/3; B: right -> 1; BAKS = (1/3 + 1) / 2
    assert values["BAKS"] == pytest.approx(2 / 3)
    # D: q4 new (right), q5 accepted (wrong) -> 1/2; E: new -> 1; BAUS = 3/4
    assert values["BAUS"] == pytest.approx(3 / 4)
    assert values["gmean"] == pytest.approx(math.sqrt(2 / 3 * 3 / 4))
    assert values["acc_known"] == pytest.approx(2 / 4)
    assert values["acc_unknown"] == pytest.approx(2 / 3)
    # unknown scores {.2, .6, .1} below known {.9, .8, .3, .7} in 4 + 3 + 4 of 12 pairs
    assert values["auroc"] == pytest.approx(11 / 12)


def test_auroc_equals_sklearn_with_ties_and_empty_rows():
    generator = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 5, (60,), generator=generator).double() / 4  # many ties
    scores[:3] = -math.inf  # queries without any candidate
    known = torch.rand(60, generator=generator) < 0.5
    values = open_set_metrics(query_labels=torch.arange(60), known=known, top1_labels=torch.arange(60),
                              scores=scores, threshold=None)
    expected = roc_auc_score((~known).numpy(), -np.nan_to_num(scores.numpy(), neginf=-10))
    assert values["auroc"] == pytest.approx(expected)
    assert math.isnan(values["BAKS"])


def test_trivial_rules_score_zero():
    always_known = open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES,
                                    threshold=-math.inf)
    always_new = open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES,
                                  threshold=math.inf)
    assert always_known["BAUS"] == 0 and always_known["gmean"] == 0
    assert always_new["BAKS"] == 0 and always_new["gmean"] == 0 and always_new["BAUS"] == 1


def _reference_gmean(threshold: float) -> float:
    """Plain-Python BAKS x BAUS geometric mean of the hand case."""
    per_identity: dict[int, list[bool]] = {}
    for label, known, top1, score in zip(QUERY.tolist(), KNOWN.tolist(), TOP1.tolist(), SCORES.tolist()):
        new = score < threshold
        per_identity.setdefault(label, []).append((not new and top1 == label) if known else new)
    known_ids = {label for label, known in zip(QUERY.tolist(), KNOWN.tolist()) if known}
    baks = np.mean([np.mean(v) for k, v in per_identity.items() if k in known_ids])
    baus = np.mean([np.mean(v) for k, v in per_identity.items() if k not in known_ids])
    return math.sqrt(baks * baus)


def test_chosen_threshold_maximises_gmean_between_scores():
    threshold, gmean = choose_threshold(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES)
    grid = np.linspace(0, 1, 1001)
    best = max(_reference_gmean(t) for t in grid)
    assert gmean == pytest.approx(best)
    assert _reference_gmean(threshold) == pytest.approx(best)
    assert not torch.isclose(SCORES.double(), torch.tensor(threshold, dtype=torch.float64)).any()
    with pytest.raises(ValueError, match="both queries"):
        choose_threshold(query_labels=QUERY, known=torch.ones(7, dtype=torch.bool), top1_labels=TOP1, scores=SCORES)


def test_torchmetric_chunks_equal_the_whole():
    metric = OpenSetMetrics(threshold=0.5)
    for part in (slice(0, 3), slice(3, 7)):
        metric.update(query_labels=QUERY[part], known=KNOWN[part], top1_labels=TOP1[part], scores=SCORES[part])
    assert metric.compute() == pytest.approx(
        open_set_metrics(query_labels=QUERY, known=KNOWN, top1_labels=TOP1, scores=SCORES, threshold=0.5))


def test_decision_inputs_from_results():
    scores = torch.tensor([[0.9, 0.1, 0.2], [0.3, 0.8, 0.1], [0.2, 0.1, 0.4]])
    results = RetrievalResults.from_scores(scores, gallery_labels=["a", "b", "c"], query_labels=["a", "a", "z"])
    inputs = top1_decision_inputs(results)
    assert inputs["known"].tolist() == [True, True, False]
    assert inputs["scores"].tolist() == pytest.approx([0.9, 0.8, 0.4])
    assert inputs["top1_labels"].tolist() == [results.gallery_labels[i].item() for i in (0, 1, 2)]


def test_held_out_identities_leave_their_queries_unknown():
    gallery = torch.tensor(list(itertools.chain.from_iterable([[i] * 3 for i in range(10)])))
    query = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 11])
    keep = held_out_gallery_identities(query_labels=query, gallery_labels=gallery, fraction=0.3, seed=1)
    held = torch.unique(gallery[~keep])
    assert len(held) == 3 and not torch.isin(held, gallery[keep]).any()
