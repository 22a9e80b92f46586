"""Batch samplers for metric learning: ``m`` images of each of ``batch_size / m`` identities per batch."""

from __future__ import annotations

import numpy as np
from pytorch_metric_learning.samplers import MPerClassSampler


def m_per_class_sampler(labels: np.ndarray, *, m: int, batch_size: int) -> MPerClassSampler:
    """pytorch-metric-learning's ``MPerClassSampler`` with one epoch = one pass over ``labels``' length.

    Identities with fewer than ``m`` images are sampled with replacement. Use it with
    ``DataLoader(..., batch_size=batch_size, sampler=sampler)`` so every batch keeps the m-per-class layout.

    Args:
        labels: (N,) class index of every training image.
        m: images per identity in a batch.
        batch_size: images per batch; a multiple of ``m``.
    """
    labels = np.asarray(labels)
    num_classes = len(np.unique(labels))
    if m < 1 or batch_size % m:
        raise ValueError(f"batch_size={batch_size} must be a positive multiple of m_per_class={m}")
    if m * num_classes < batch_size:
        raise ValueError(
            f"m_per_class={m} x {num_classes} training identities < batch_size={batch_size}; lower "
            "batch_size or m_per_class"
        )
    if len(labels) < batch_size:
        raise ValueError(f"{len(labels)} training images are fewer than batch_size={batch_size}")
    return MPerClassSampler(labels, m=m, batch_size=batch_size, length_before_new_iter=len(labels))
