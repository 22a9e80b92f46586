"""Samplers for metric learning: ``m`` images of each of ``batch_size / m`` identities per batch, on every rank."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import DistributedSampler


class MPerClassSampler(DistributedSampler):
    """Index order whose every run of ``batch_size`` indices is an m-per-class batch, split across ranks.

    Each epoch (seeded by ``seed`` and :meth:`set_epoch`), every identity's images are shuffled and cut into
    chunks of ``m`` (an identity with fewer than ``m`` images gives one chunk, its images repeated); chunks are
    shuffled and grouped ``batch_size / m`` distinct identities per batch. Whole batches are dealt to the ranks in
    turn (rank r takes batches r, r + W, ...; all ranks the same number), so within an epoch no image is drawn
    twice, neither on one rank nor across ranks. Use with ``DataLoader(..., batch_size=batch_size,
    sampler=sampler, drop_last=True)``. Being a ``DistributedSampler``, Lightning keeps it under DDP (it does
    not wrap it) and calls :meth:`set_epoch`.

    Args:
        labels: (N,) class index of every training image.
        m: images per identity in a batch.
        batch_size: images per batch (per rank); a multiple of ``m``.
        num_replicas: number of ranks (W).
        rank: this process's rank.
        seed: base seed; every rank must get the same.
    """

    def __init__(self, labels: np.ndarray, *, m: int, batch_size: int, num_replicas: int = 1, rank: int = 0,
                 seed: int = 0) -> None:
        labels = np.asarray(labels)
        num_classes = len(np.unique(labels))
        if m < 1 or batch_size % m:
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of m_per_class={m}")
        if m * num_classes < batch_size:
            raise ValueError(
                f"m_per_class={m} x {num_classes} training identities < batch_size={batch_size}; lower "
                "batch_size or m_per_class"
            )
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank={rank} must be in [0, num_replicas={num_replicas})")
        # DistributedSampler's own state (dataset size, epoch) without its index logic
        super().__init__(labels, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.labels, self.m, self.batch_size = labels, m, batch_size
        self.classes_per_batch = batch_size // m
        if self._batches(0).shape[0] == 0:
            raise ValueError(f"{len(labels)} training images give no full m_per_class batch per rank "
                             f"(batch_size={batch_size}, {num_replicas} ranks); lower batch_size or m_per_class")

    def _batches(self, epoch: int) -> np.ndarray:
        """``(B_all, batch_size)`` image indices of every batch of the epoch, all ranks together."""
        rng = np.random.default_rng([self.seed, epoch])
        chunks, chunk_labels = [], []
        for label in np.unique(self.labels):
            images = rng.permutation(np.flatnonzero(self.labels == label))
            if len(images) < self.m:
                chunks.append(rng.choice(images, self.m, replace=True))
                chunk_labels.append(label)
                continue
            for start in range(0, len(images) - self.m + 1, self.m):
                chunks.append(images[start : start + self.m])
                chunk_labels.append(label)
        batches, open_batches = [], []  # open batch: (chunk list, identities)
        for i in rng.permutation(len(chunks)):
            target = next((b for b in open_batches if chunk_labels[i] not in b[1]), None)
            if target is None:
                target = ([], set())
                open_batches.append(target)
            target[0].append(chunks[i])
            target[1].add(chunk_labels[i])
            if len(target[0]) == self.classes_per_batch:
                batches.append(np.concatenate(target[0]))
                open_batches.remove(target)
        usable = len(batches) - len(batches) % self.num_replicas
        return np.array(batches[:usable], dtype=np.int64).reshape(usable, self.batch_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self._batches(self.epoch)[self.rank :: self.num_replicas].reshape(-1).tolist())

    def __len__(self) -> int:
        return len(self._batches(self.epoch)) // self.num_replicas * self.batch_size
