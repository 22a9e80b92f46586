import numpy as np
import pytest
import torch
from sklearn.metrics.pairwise import cosine_similarity

from reid_lightning.similarity.cosine import CosineSimilarity


@pytest.fixture
def embeddings():
    rng = np.random.default_rng(0)
    # Non-square, with row norms spread over six orders of magnitude.
    query = rng.normal(size=(7, 16)) * rng.uniform(1e-3, 1e3, size=(7, 1))
    database = rng.normal(size=(11, 16)) * rng.uniform(1e-3, 1e3, size=(11, 1))
    return query, database


def test_matches_sklearn_for_numpy_and_tensor_inputs(embeddings):
    query, database = embeddings
    expected = cosine_similarity(query, database)
    from_numpy = CosineSimilarity()(query, database)
    from_tensor = CosineSimilarity()(torch.from_numpy(query).float(), torch.from_numpy(database).float())
    assert from_numpy.shape == (7, 11) and from_numpy.dtype == torch.float32
    np.testing.assert_allclose(from_numpy.numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(from_tensor.numpy(), expected, atol=1e-6)


def test_chunking_gives_the_same_matrix(embeddings):
    query, database = embeddings
    whole = CosineSimilarity()(query, database)
    chunked = CosineSimilarity(chunk_size=3)(query, database)
    torch.testing.assert_close(chunked, whole)


def test_integer_embeddings_and_self_similarity_are_exact():
    features = np.array([[3, 4], [1, 0], [2, 2]])
    similarity = CosineSimilarity()(features, features)
    np.testing.assert_allclose(similarity.numpy(), cosine_similarity(features, features), atol=1e-6)
    assert similarity.max() <= 1.0
    np.testing.assert_allclose(similarity.diagonal().numpy(), 1.0, atol=1e-6)


def test_zero_vectors_give_zero_not_nan():
    query = np.array([[0.0, 0.0], [1.0, 0.0]])
    database = np.array([[1.0, 1.0], [0.0, 0.0]])
    similarity = CosineSimilarity()(query, database).numpy()
    np.testing.assert_allclose(similarity, [[0.0, 0.0], [np.sqrt(0.5), 0.0]], atol=1e-6)


def test_bad_inputs_raise_clear_errors():
    similarity = CosineSimilarity()
    with pytest.raises(ValueError, match=r"differ in size.*\(Q, 4\).*\(G, 5\)"):
        similarity(np.ones((2, 4)), np.ones((3, 5)))
    with pytest.raises(ValueError, match=r"query must have shape \(N, D\)"):
        similarity(np.ones(4), np.ones((3, 4)))
    bad = np.ones((3, 4))
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match=r"database contains NaN.*\[2\]"):
        similarity(np.ones((2, 4)), bad)
    with pytest.raises(ValueError, match="chunk_size"):
        CosineSimilarity(chunk_size=0)
