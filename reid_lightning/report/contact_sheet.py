"""Contact sheet of proposed new individuals: one row of thumbnails per proposed group, largest group first, so a
person can confirm a group or split it at a glance.

Each row is one image composed with PIL and shown in one axes (a grid of one axes per thumbnail costs seconds per
figure); the row label ``new_001 (7 photos)`` is the axes' title, and the true identity of each photo, when
given, is written under it (red when it is not the group's most common identity).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from ..runtime.grouping import number_by_size
from .panels import Caption, ReportInputs, ReportSettings, register_panel

PAD = 6
"""White pixels between thumbnails."""


def contact_sheet(groups: Tensor | np.ndarray | Sequence[int], *, dataset, photos: Sequence[int] | None = None,
                  identities: Sequence[str] | None = None, max_groups: int = 20, max_photos: int = 8,
                  thumbnail_size: int = 96, prefix: str = "new_") -> Figure:
    """One row per proposed group, largest first (ties by first photo), at most ``max_groups`` rows of at most
    ``max_photos`` thumbnails (a group's first photos in order).

    Args:
        groups: ``(N,)`` proposed group of each photo (e.g. ``discover(...).groups``; any ids).
        dataset: the images: ``dataset.get_image(i)`` (an :class:`~reid_lightning.data.ImageDataset`, untransformed)
            or else ``dataset[i]`` (a PIL image, or a tuple starting with one).
        photos: ``(N,)`` dataset position of each photo (default ``0..N-1``), e.g. the rows answered "new".
        identities: ``(N,)`` true identity of each photo, written under its thumbnail; None: not shown.
        prefix: row labels are ``f"{prefix}{rank:03d} ({size} photos)"``, rank 1 the largest group.
    """
    groups = np.asarray(groups.detach().cpu() if isinstance(groups, Tensor) else groups).reshape(-1)
    photos = np.arange(len(groups)) if photos is None else np.asarray(photos).reshape(-1)
    if len(photos) != len(groups) or (identities is not None and len(identities) != len(groups)):
        raise ValueError(f"groups has {len(groups)} entries, photos {len(photos)}"
                         + ("" if identities is None else f", identities {len(identities)}"))
    if len(groups) == 0:
        raise ValueError("contact_sheet needs at least one photo")
    if max_groups < 1 or max_photos < 1:
        raise ValueError(f"max_groups={max_groups} and max_photos={max_photos} must be at least 1")
    ranks = number_by_size(groups)
    num_groups = int(ranks.max()) + 1
    shown = min(num_groups, max_groups)
    cell = thumbnail_size + PAD
    figure = Figure(figsize=(0.4 + max_photos * cell / 80, 0.6 + shown * (cell + (30 if identities else 16)) / 80))
    axes = figure.subplots(shown, 1, squeeze=False)[:, 0]
    for rank, ax in enumerate(axes):
        members = np.flatnonzero(ranks == rank)
        strip = Image.new("RGB", (max_photos * cell, cell), (255, 255, 255))
        for slot, member in enumerate(members[:max_photos]):
            image = _load(dataset, int(photos[member]))
            image.thumbnail((thumbnail_size, thumbnail_size), Image.Resampling.BILINEAR)
            strip.paste(image, (slot * cell + (cell - image.width) // 2, (cell - image.height) // 2))
        ax.imshow(np.asarray(strip))
        ax.set_xticks([])
        ax.set_yticks([])
        for spine in ax.spines.values():
            spine.set_visible(False)
        more = f", {len(members) - max_photos} not shown" if len(members) > max_photos else ""
        plural = "photo" if len(members) == 1 else "photos"
        ax.set_title(f"{prefix}{rank + 1:03d} ({len(members)} {plural}{more})", loc="left", fontsize=8)
        if identities is not None:
            names = [str(identities[member]) for member in members]
            values, counts = np.unique(names, return_counts=True)
            majority = values[np.argmax(counts)]
            for slot, name in enumerate(names[:max_photos]):
                ax.text(slot * cell + cell / 2, cell + 2, name, ha="center", va="top", fontsize=6,
                        color="black" if name == majority else "#d7301f", clip_on=False)
    title = f"{num_groups} proposed new individuals among {len(groups)} photos"
    figure.suptitle(title + (f" (the {shown} largest shown)" if shown < num_groups else ""), fontsize=9)
    figure.tight_layout()
    return figure


def _load(dataset, index: int) -> Image.Image:
    """Photo ``index`` of ``dataset`` as an RGB PIL image (a copy: ``thumbnail`` resizes in place)."""
    image = dataset.get_image(index) if hasattr(dataset, "get_image") else dataset[index]
    if isinstance(image, tuple):
        image = image[0]
    if not isinstance(image, Image.Image):
        raise TypeError(f"dataset item {index} is {type(image).__name__}, not a PIL image; give an untransformed "
                        "dataset (one with get_image, like ImageDataset)")
    return image.convert("RGB")


@register_panel("new_individuals", captions={"new_individuals": Caption(
    "Which photos of new animals belong together? (proposed new individuals)",
    "The queries of animals absent from the gallery, grouped at the discovery cut chosen on validation: one row "
    "per proposed individual, largest first, each photo's true animal underneath (red: not the row's usual one). "
    "A row with two animals should be split; two rows of one animal, joined.")})
def new_individuals_panel(inputs: ReportInputs, settings: ReportSettings) -> dict[str, Figure]:
    """The contact sheet of the grouped unknown queries."""
    found = inputs.discovery
    if found is None or found.discovery.num_groups == 0:
        return {}
    queries = found.queries.tolist()
    names = inputs.results.names(found.true_labels).tolist() if inputs.results.query_labels is not None else None
    return {"new_individuals": contact_sheet(found.discovery.groups, dataset=inputs.query_dataset, photos=queries,
                                            identities=names, thumbnail_size=settings.thumbnail_size)}
