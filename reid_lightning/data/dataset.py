"""Image dataset over metadata, compatible with wildlife-tools' ``WildlifeDataset`` usage."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from ..runtime.images import crop_to_box, load_rgb
from .labels import encode_identities
from .metadata import parse_bbox

IMG_LOAD_MODES = ("auto", "full", "bbox")


def resolve_img_load(img_load: str, columns) -> str:
    """``"full"`` or ``"bbox"``: ``"auto"`` crops to the bounding box when the metadata has a ``bbox`` column."""
    if img_load not in IMG_LOAD_MODES:
        raise ValueError(f"img_load={img_load!r} is not supported; choose one of {list(IMG_LOAD_MODES)}")
    if img_load == "auto":
        return "bbox" if "bbox" in columns else "full"
    return img_load


class ImageDataset(Dataset):
    """Images of individuals listed in a metadata DataFrame.

    Labels are integer codes: known identities ``0..K-1`` in sorted name order, each ``"unknown"`` row its
    own negative code, so it is never a positive of any other row. Images are decoded to 8-bit RGB by
    :func:`.images.to_rgb` (EXIF orientation, 16-bit, transparency). Error messages name the row by
    ``metadata``'s index (the CSV row after :func:`load_metadata`), also within subsets.

    Args:
        metadata: one row per image with at least ``col_path`` and ``col_label`` (and ``bbox`` for
            ``img_load="bbox"``).
        root: folder the paths are relative to (``None``: current directory or absolute paths).
        transform: callable applied to the loaded PIL image (``None``: return the PIL image).
        img_load: ``"full"`` image, ``"bbox"`` to crop the ``bbox`` column's [x, y, w, h] (clipped to the
            image; empty cells mean the full image), or ``"auto"``: ``"bbox"`` when that column exists.
        col_path: column with image paths.
        col_label: column with identity names.
        load_label: return ``(image, label)`` instead of only the image.
    """

    def __init__(
        self,
        metadata: pd.DataFrame,
        root: str | Path | None = None,
        transform: Callable | None = None,
        img_load: str = "full",
        col_path: str = "path",
        col_label: str = "identity",
        load_label: bool = True,
    ) -> None:
        img_load = resolve_img_load(img_load, metadata.columns)
        missing = [c for c in (col_path, col_label) if c not in metadata.columns]
        if img_load == "bbox" and "bbox" not in metadata.columns:
            missing.append("bbox")
        if missing:
            raise ValueError(
                f"metadata lacks column(s) {missing} (img_load={img_load!r}, col_path={col_path!r}, "
                f"col_label={col_label!r}); found {list(metadata.columns)}"
            )
        self.rows = metadata.index.to_numpy()
        self.metadata = metadata.reset_index(drop=True)
        self.root = root
        self.transform = transform
        self.img_load = img_load
        self.col_path = col_path
        self.col_label = col_label
        self.load_label = load_label
        self.labels, self.labels_map = encode_identities(self.metadata[col_label])

    @property
    def labels_string(self) -> np.ndarray:
        """(N,) identity name of every image."""
        return self.metadata[self.col_label].astype(str).to_numpy()

    @property
    def num_classes(self) -> int:
        """Number of known identities in the label coding (codes ``>= 0``)."""
        return sum(1 for code in self.labels_map if code >= 0)

    def __len__(self) -> int:
        return len(self.metadata)

    def image_path(self, idx: int) -> Path:
        """Full path of image ``idx``."""
        path = Path(self.metadata[self.col_path].iloc[idx])
        return path if self.root is None else Path(self.root) / path

    def get_image(self, idx: int) -> Image.Image:
        """Load image ``idx`` as RGB, cropped to its bounding box when ``img_load="bbox"``."""
        path = self.image_path(idx)
        where = f"image '{path}' (metadata row {self.rows[idx]})"
        try:
            image = load_rgb(path)
        except (FileNotFoundError, UnidentifiedImageError, OSError) as error:
            raise OSError(
                f"cannot open {where}, root={self.root!r}: {error}; check the file and the '{self.col_path}' "
                "column"
            ) from error
        if self.img_load == "bbox":
            try:
                box = parse_bbox(self.metadata["bbox"].iloc[idx])
            except ValueError as error:
                raise ValueError(f"{where}, column 'bbox': {error}") from None
            if box is not None:
                image = crop_to_box(image, box, where)
        return image

    def __getitem__(self, idx: int):
        image = self.get_image(idx)
        if self.transform is not None:
            image = self.transform(image)
        if self.load_label:
            return image, int(self.labels[idx])
        return image

    def get_subset(self, idx: Sequence[int] | np.ndarray) -> ImageDataset:
        """A new dataset of rows ``idx`` (positions or a boolean mask) keeping this dataset's label codes."""
        positions = np.asarray(idx)
        if positions.dtype == bool:
            if len(positions) != len(self):
                raise ValueError(f"boolean mask has {len(positions)} entries for a dataset of {len(self)}")
            positions = np.flatnonzero(positions)
        subset = ImageDataset.__new__(type(self))
        subset.__dict__.update(self.__dict__)
        subset.metadata = self.metadata.iloc[positions].reset_index(drop=True)
        subset.rows = self.rows[positions].copy()
        subset.labels = self.labels[positions].copy()
        subset.labels_map = dict(self.labels_map)
        return subset
