"""Dict samples for the model's loops over an :class:`ImageDataset`."""

from __future__ import annotations

import numpy as np
from torch.utils.data import Dataset

from .dataset import ImageDataset


class ReIDSamples(Dataset):
    """Dict samples ``{"image": (3, H, W), "label": int[, "index": int, "group": int]}`` over an
    :class:`ImageDataset`.

    Args:
        dataset: images with a tensor-producing transform.
        labels: (N,) label of every image (class index for training, identity code for evaluation).
        with_index: add the sample's position within ``dataset`` as ``"index"``.
        groups: optional (N,) sequence code of every image (-1: none), added as ``"group"``.
    """

    def __init__(self, dataset: ImageDataset, labels: np.ndarray, with_index: bool = False,
                 groups: np.ndarray | None = None) -> None:
        if len(labels) != len(dataset) or (groups is not None and len(groups) != len(dataset)):
            raise ValueError(f"{len(labels)} labels for a dataset of {len(dataset)} images")
        self.dataset = dataset
        self.labels = np.asarray(labels, dtype=np.int64)
        self.with_index = with_index
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        item = self.dataset[idx]
        sample = {"image": item[0] if self.dataset.load_label else item, "label": int(self.labels[idx])}
        if self.with_index:
            sample["index"] = idx
        if self.groups is not None:
            sample["group"] = int(self.groups[idx])
        return sample
