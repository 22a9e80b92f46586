from collections import Counter

import numpy as np
import pytest
import torch
from recognite.eval import knn as recognite_knn

from reid_lightning.inference import KnnClassifier, OpenSetDecision, TopkClassifier, open_set_predict
from reid_lightning.similarity.cosine import CosineSimilarity

NAN = float("nan")


def reference_knn(similarity, labels, k):
    """Plain-Python version of the documented k-NN rules."""
    predictions, scores = [], []
    for row in similarity:
        ranked = [j for j in sorted(range(len(row)), key=lambda j: -row[j]) if row[j] > -np.inf][:k]
        votes = Counter(labels[j] for j in ranked)
        most = max(votes.values())
        winner = next(labels[j] for j in ranked if votes[labels[j]] == most)
        predictions.append(winner)
        scores.append(np.mean([row[j] for j in ranked if labels[j] == winner]))
    return np.array(predictions), np.array(scores)


def reference_topk(similarity, labels, k):
    predictions, scores = [], []
    for row in similarity:
        best = {}
        for j in sorted(range(len(row)), key=lambda j: -row[j]):
            if row[j] > -np.inf and labels[j] not in best:
                best[labels[j]] = row[j]
        predictions.append(list(best)[:k])
        scores.append(list(best.values())[:k])
    return predictions, scores


@pytest.fixture(params=[None, 1], ids=["continuous", "many-ties"])
def random_problem(request):
    rng = np.random.default_rng(0)
    similarity = rng.uniform(-1, 1, size=(25, 30))
    if request.param is not None:
        # Rounding creates equal scores everywhere, also at the k-th place.
        similarity = similarity.round(request.param)
    labels = np.array(["ann", "bob", "cy", "dora", "ed", "fay"])[rng.integers(0, 6, size=30)]
    return similarity, labels


@pytest.mark.parametrize("k", [1, 3, 4, 7])
def test_knn_matches_reference(random_problem, k):
    similarity, labels = random_problem
    predictions, scores = KnnClassifier(labels, k=k, return_scores=True, chunk_size=4)(similarity)
    expected_predictions, expected_scores = reference_knn(similarity, labels, k)
    assert predictions.dtype == labels.dtype
    np.testing.assert_array_equal(predictions, expected_predictions)
    np.testing.assert_allclose(scores, expected_scores, atol=1e-12)


def test_knn_k1_matches_recognite():
    # Continuous scores only: recognite leaves the order of equal scores to torch.topk.
    rng = np.random.default_rng(1)
    similarity = rng.uniform(-1, 1, size=(25, 30))
    labels = rng.integers(0, 6, size=30)
    predictions = KnnClassifier(labels, k=1)(torch.tensor(similarity))
    np.testing.assert_array_equal(
        predictions, recognite_knn(torch.tensor(similarity), torch.tensor(labels), 1)
    )


def test_knn_vote_tie_goes_to_best_ranked_label():
    labels = np.array(["a", "b", "b", "a"])
    classifier = KnnClassifier(labels, k=4, return_scores=True)
    predictions, scores = classifier(np.array([[0.9, 0.8, 0.7, 0.6], [0.5, 0.95, 0.8, 0.7]]))
    np.testing.assert_array_equal(predictions, ["a", "b"])
    np.testing.assert_allclose(scores, [0.75, 0.875])


def test_knn_unscored_entries_never_vote():
    # If the NaN / -inf "a" entries voted, "a" would win with 2 of 4 votes.
    classifier = KnnClassifier(np.array(["a", "a", "b", "c"]), k=4, return_scores=True)
    predictions, scores = classifier(np.array([[NAN, -np.inf, 0.1, -0.5], [NAN, 0.3, NAN, NAN]]))
    np.testing.assert_array_equal(predictions, ["b", "a"])
    np.testing.assert_array_equal(scores, [0.1, 0.3])
    with pytest.raises(ValueError, match=r"rows \[1\] have no scored"):
        classifier(np.array([[0.1, 0.2, 0.3, 0.4], [NAN, -np.inf, NAN, NAN]]))


def test_knn_single_query_and_input_types():
    labels = [3, 1, 4]
    classifier = KnnClassifier(labels, k=1, return_scores=True)
    for similarity in ([0.1, 0.7, 0.2], np.array([[0.1, 0.7, 0.2]]), torch.tensor([0.1, 0.7, 0.2])):
        predictions, scores = classifier(similarity)
        np.testing.assert_array_equal(predictions, [1])
        np.testing.assert_allclose(scores, [0.7], rtol=1e-6)


def test_knn_keeps_float64_resolution():
    # Calibrated scores may differ only far below float32 resolution.
    similarity = torch.tensor([[0.5, 0.5 + 1e-12]], dtype=torch.float64)
    predictions, scores = KnnClassifier(np.array(["x", "y"]), return_scores=True)(similarity)
    assert predictions[0] == "y" and scores.dtype == np.float64


def test_knn_copies_labels_and_checks_arguments():
    labels = np.array(["a", "b"])
    classifier = KnnClassifier(labels)
    labels[0] = "z"
    assert classifier(np.array([[1.0, 0.0]]))[0] == "a"
    with pytest.raises(ValueError, match="k must be between 1 and the database size 2"):
        KnnClassifier(labels, k=3)
    with pytest.raises(ValueError, match="3 columns but database_labels has 2"):
        classifier(np.zeros((1, 3)))


def test_topk_matches_reference_and_is_distinct(random_problem):
    similarity, labels = random_problem
    similarity[0, :20] = NAN
    predictions, scores, indices = TopkClassifier(labels, k=4, return_all=True, pad_label="", chunk_size=3)(
        similarity
    )
    expected_predictions, expected_scores = reference_topk(similarity, labels, 4)
    assert predictions.shape == (25, 4)
    for row, (expected_row, expected_score) in enumerate(zip(expected_predictions, expected_scores)):
        found = len(expected_row)
        assert list(predictions[row, :found]) == expected_row
        np.testing.assert_allclose(scores[row, :found], expected_score)
        assert len(set(predictions[row, :found])) == found
        np.testing.assert_array_equal(labels[indices[row, :found]], expected_row)
        np.testing.assert_allclose(similarity[row, indices[row, :found]], expected_score)
        assert list(predictions[row, found:]) == [""] * (4 - found)


def test_topk_large_k_returns_one_column_per_identity():
    # wildlife-tools' test_topk_large_k: 5 identities, k = 10 -> 5 columns, every identity once
    labels = np.array(["a", "b", "c", "d", "e", "a", "c"])
    similarity = np.array([[0.1, 0.9, 0.3, 0.4, 0.2, 0.8, 0.5], [0.7, 0.1, 0.2, 0.3, 0.6, 0.5, 0.4]])
    predictions = TopkClassifier(labels, k=10)(similarity)
    assert predictions.shape == (2, 5)
    assert predictions.tolist() == [["b", "a", "c", "d", "e"], ["a", "e", "c", "d", "b"]]


def test_topk_pads_queries_with_fewer_scored_identities():
    labels = np.array([7, 8, 7])
    classifier = TopkClassifier(labels, k=4, return_all=True)
    predictions, scores, indices = classifier([0.2, NAN, 0.9])  # identity 8 unscored: one of 2 columns padded
    assert predictions.dtype == object
    assert predictions.tolist() == [[7, None]]
    np.testing.assert_array_equal(indices, [[2, -1]])
    np.testing.assert_array_equal(scores, [[0.9, NAN]])
    assert TopkClassifier(labels, k=2, pad_label=-1)(np.array([[0.1, 0.5, 0.2]])).tolist() == [[8, 7]]


def test_open_set_decision():
    labels = np.array(["a", "b", "c"])
    scores = np.array([0.3, 0.5, NAN])
    decided = open_set_predict(labels, scores=scores, threshold=0.5)
    np.testing.assert_array_equal(decided, ["new_individual", "b", "new_individual"])
    np.testing.assert_array_equal(labels, ["a", "b", "c"])
    top = np.array([[1, 2], [3, 4]])
    np.testing.assert_array_equal(
        OpenSetDecision(threshold=0.8, new_label=-1)(top, scores=torch.tensor([[0.9, 0.1], [0.8, 0.2]])),
        [[1, -1], [3, -1]],
    )
    with pytest.raises(ValueError, match="same shape"):
        open_set_predict(labels, scores=scores[:2], threshold=0.5)


def test_seed_inference_example():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2, 32)) * 5
    database = np.repeat(centres, 10, axis=0) + rng.normal(size=(20, 32))
    query = np.repeat(centres, 10, axis=0) + rng.normal(size=(20, 32))
    labels_string = np.repeat(["macaque_a", "macaque_b"], 10)

    similarity = CosineSimilarity()(query, database)
    classifier = KnnClassifier(k=1, database_labels=labels_string)
    predictions = classifier(similarity)
    assert np.mean(labels_string == predictions) == 1.0
