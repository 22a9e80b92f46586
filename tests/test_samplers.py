"""The rank-aware m-per-class sampler: batch layout on every rank, disjoint ranks, epochs."""

from collections import Counter

import numpy as np
import pytest

from reid_lightning.data import MPerClassSampler


def rank_batches(sampler):
    indices = list(sampler)
    assert len(indices) == len(sampler)
    return np.array(indices).reshape(-1, sampler.batch_size)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_every_batch_is_m_per_class_and_ranks_share_no_image(world_size):
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(13), rng.integers(2, 11, size=13))  # uneven identities, some below m... and above
    labels = np.concatenate([labels, [13]])  # one identity with a single image (< m): repeated inside its batch
    samplers = [MPerClassSampler(labels, m=3, batch_size=12, num_replicas=world_size, rank=rank, seed=5)
                for rank in range(world_size)]
    for epoch in (0, 1):
        seen = []
        for sampler in samplers:
            sampler.set_epoch(epoch)
            batches = rank_batches(sampler)
            assert len(batches) == len(rank_batches(samplers[0]))  # same number of steps on every rank
            for batch in batches:
                counts = Counter(labels[batch].tolist())
                assert sorted(counts.values()) == [3, 3, 3, 3], counts
            seen.append(set(batches.reshape(-1).tolist()))
        for a in range(world_size):
            for b in range(a + 1, world_size):
                assert not seen[a] & seen[b], "ranks share images within an epoch"
        # images of identities with at least m images appear at most once in the epoch, over all ranks
        everything = Counter(i for sampler in samplers for i in rank_batches(sampler).reshape(-1).tolist())
        assert all(n == 1 for i, n in everything.items() if np.sum(labels == labels[i]) >= 3)
    # a new epoch draws other batches; the same epoch and seed draw the same ones
    samplers[0].set_epoch(0)
    first = rank_batches(samplers[0])
    samplers[0].set_epoch(1)
    assert not np.array_equal(first, rank_batches(samplers[0]))
    samplers[0].set_epoch(0)
    assert np.array_equal(first, rank_batches(samplers[0]))


def test_epoch_covers_every_image_once_over_the_ranks():
    labels = np.repeat(np.arange(10), 8)
    samplers = [MPerClassSampler(labels, m=4, batch_size=8, num_replicas=2, rank=rank, seed=3) for rank in (0, 1)]
    # 20 chunks of 4 -> 10 batches of 2 identities -> 5 per rank: every one of the 80 images exactly once
    assert [len(sampler) for sampler in samplers] == [5 * 8, 5 * 8]
    drawn = np.concatenate([list(sampler) for sampler in samplers])
    assert sorted(drawn.tolist()) == list(range(80))
