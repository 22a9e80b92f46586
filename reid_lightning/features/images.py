"""Reading images from the datasets of the seed API: items are ``image`` or ``(image, label, ...)``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from ..interrupt import check


def item_image(item: Any, index: int) -> torch.Tensor:
    """The image of a dataset item (the item or its first element): a float ``(C, H, W)`` tensor."""
    image = item[0] if isinstance(item, (tuple, list)) else item
    if not isinstance(image, torch.Tensor):
        raise TypeError(
            f"Dataset item {index} holds a {type(image).__name__}, not an image tensor: "
            "end the dataset's transform with T.ToTensor()."
        )
    if image.ndim != 3 or image.shape[0] not in (1, 3) or not image.is_floating_point():
        raise ValueError(
            f"Dataset item {index}: expected a float (C, H, W) image with C in (1, 3), got {image.dtype} "
            f"{tuple(image.shape)}."
        )
    return image


def check_unit_range(image: torch.Tensor, index: int) -> None:
    """Local-feature models take intensities in [0, 1]; normalised images silently give wrong keypoints."""
    low, high = image.aminmax()
    if low < -1e-3 or high > 1 + 1e-3:
        raise ValueError(
            f"Dataset item {index}: intensities span [{low:.3f}, {high:.3f}], local features need [0, 1]. "
            "Drop T.Normalize from the transform (use e.g. T.Compose([T.Resize(...), T.ToTensor()]))."
        )


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


def iterate_images(
    dataset: Dataset, batch_size: int, num_workers: int, description: str, progress: bool = True
) -> Iterator[tuple[int, list[torch.Tensor]]]:
    """Yield ``(first_index, images)`` in dataset order; images of one batch may differ in size."""
    if not hasattr(dataset, "__len__"):
        raise TypeError(
            f"{description} needs a map-style dataset with __len__, got {type(dataset).__name__}."
        )
    loader = DataLoader(
        dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=_as_list, shuffle=False
    )
    start = 0
    for batch in tqdm(loader, desc=description, disable=not progress, leave=False):
        yield start, [item_image(item, start + offset) for offset, item in enumerate(batch)]
        start += len(batch)
        # a safe point of an interruptible phase (see reid_lightning.interrupt): the caller is done with the
        # previous batch, its cache writes included
        check()


def group_by_size(images: list[torch.Tensor]) -> dict[tuple[int, ...], list[int]]:
    """Positions of the images of each ``(C, H, W)`` shape, so each group stacks into one batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for position, image in enumerate(images):
        groups.setdefault(tuple(image.shape), []).append(position)
    return groups
