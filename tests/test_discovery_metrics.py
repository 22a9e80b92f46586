"""Discovery metrics (ARI, AMI, pairwise and B-cubed precision / recall, count error) against hand computations,
first principles and scikit-learn."""

import itertools
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_mutual_info_score, adjusted_rand_score

from reid_lightning.metrics import DISCOVERY_METRICS, discovery_metrics

# 6 photos of 3 individuals (a: 3 photos, b: 2, c: 1) proposed as 4 groups:
#   group 0 = {a, a}, group 1 = {a, b}, group 2 = {b}, group 3 = {c}
TRUE = ["a", "a", "a", "b", "b", "c"]
PROPOSED = [0, 0, 1, 1, 2, 3]


def _mutual_information(true, proposed) -> float:
    """MI from its definition: sum over cells of n_ij / N * log(N n_ij / (a_i b_j))."""
    n = len(true)
    total = 0.0
    for t, p in set(zip(true, proposed)):
        n_ij = sum(1 for x, y in zip(true, proposed) if (x, y) == (t, p))
        total += n_ij / n * math.log(n * n_ij / (true.count(t) * list(proposed).count(p)))
    return total


def _entropy(labels) -> float:
    n = len(labels)
    return -sum(labels.count(v) / n * math.log(labels.count(v) / n) for v in set(labels))


def test_hand_made_labelling():
    values = discovery_metrics(true_labels=TRUE, proposed_labels=PROPOSED)
    assert set(values) == set(DISCOVERY_METRICS)
    # pairs: same group {0,1} (a,a: right), {2,3} (a,b: wrong) -> 1 of 2 proposed pairs right;
    # same individual: a has 3 pairs, b 1 -> 1 of 4 true pairs found
    assert values["pair_precision"] == pytest.approx(1 / 2)
    assert values["pair_recall"] == pytest.approx(1 / 4)
    assert values["pair_F1"] == pytest.approx(2 * (1 / 2) * (1 / 4) / (1 / 2 + 1 / 4))
    # ARI = (index - expected) / (max - expected): index 1, expected 2 * 4 / C(6, 2) = 8/15, max (2 + 4) / 2 = 3
    assert values["ARI"] == pytest.approx((1 - 8 / 15) / (3 - 8 / 15))  # 7/37
    # B-cubed, per photo: precision 1, 1, 1/2, 1/2, 1, 1; recall 2/3, 2/3, 1/3, 1/2, 1/2, 1
    assert values["bcubed_precision"] == pytest.approx(5 / 6)
    assert values["bcubed_recall"] == pytest.approx(11 / 18)
    assert values["bcubed_F1"] == pytest.approx(55 / 78)
    assert (values["num_groups"], values["num_individuals"], values["count_error"]) == (4, 3, 1)
    # AMI = (MI - E[MI]) / (mean entropy - E[MI]), E[MI] over all 720 orderings of the proposed labels
    mi = (1 / 3) * math.log(2) + (1 / 6) * math.log(1.5) + (1 / 6) * math.log(3) + (1 / 6) * math.log(6)
    assert _mutual_information(TRUE, PROPOSED) == pytest.approx(mi)
    permutations = list(itertools.permutations(PROPOSED))
    expected_mi = sum(_mutual_information(TRUE, p) for p in permutations) / len(permutations)
    mean_entropy = (_entropy(TRUE) + _entropy(PROPOSED)) / 2
    assert values["AMI"] == pytest.approx((mi - expected_mi) / (mean_entropy - expected_mi))


def test_perfect_split_and_merged_proposals():
    perfect = discovery_metrics(true_labels=TRUE, proposed_labels=[7, 7, 7, 1, 1, 4])
    assert (perfect["ARI"], perfect["AMI"], perfect["pair_F1"], perfect["bcubed_F1"], perfect["count_error"]) == \
        pytest.approx((1, 1, 1, 1, 0))
    singletons = discovery_metrics(true_labels=TRUE, proposed_labels=range(6))
    # no proposed pair: nothing wrongly joined (precision 1), nothing found (recall 0)
    assert (singletons["pair_precision"], singletons["pair_recall"], singletons["pair_F1"]) == (1.0, 0.0, 0.0)
    assert singletons["count_error"] == 3
    merged = discovery_metrics(true_labels=TRUE, proposed_labels=[0] * 6)
    assert merged["pair_precision"] == pytest.approx(4 / 15) and merged["pair_recall"] == 1.0
    assert merged["count_error"] == -2


def test_random_labellings_match_scikit_learn_and_pair_counting():
    rng = np.random.default_rng(0)
    for _ in range(5):
        n = int(rng.integers(2, 60))
        true = rng.integers(0, max(1, n // 4), n)
        proposed = rng.integers(0, max(1, n // 3), n)
        values = discovery_metrics(true_labels=torch.from_numpy(true), proposed_labels=proposed.astype(str))
        assert values["ARI"] == pytest.approx(adjusted_rand_score(true, proposed), abs=1e-12)
        assert values["AMI"] == pytest.approx(adjusted_mutual_info_score(true, proposed), abs=1e-12)
        pairs = list(itertools.combinations(range(n), 2))
        same_true = {(i, j) for i, j in pairs if true[i] == true[j]}
        same_proposed = {(i, j) for i, j in pairs if proposed[i] == proposed[j]}
        if same_proposed:
            assert values["pair_precision"] == pytest.approx(len(same_true & same_proposed) / len(same_proposed))
        if same_true:
            assert values["pair_recall"] == pytest.approx(len(same_true & same_proposed) / len(same_true))
        precision = np.mean([np.mean(true[proposed == proposed[i]] == true[i]) for i in range(n)])
        recall = np.mean([np.mean(proposed[true == true[i]] == proposed[i]) for i in range(n)])
        assert values["bcubed_precision"] == pytest.approx(precision)
        assert values["bcubed_recall"] == pytest.approx(recall)
        assert values["count_error"] == len(set(proposed)) - len(set(true))


def test_lengths_must_match():
    with pytest.raises(ValueError, match="true_labels has 6 entries, proposed_labels 5"):
        discovery_metrics(true_labels=TRUE, proposed_labels=PROPOSED[:5])
