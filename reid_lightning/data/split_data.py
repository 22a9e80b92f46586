"""Validated metadata split into training, validation and test images, with training classes and sequences."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .dataset import ImageDataset
from .labels import contiguous_classes
from .metadata import load_metadata
from .sources import MetadataSource
from .splits import SPLIT_NAMES, split_metadata
from .validation import bad_images_message, check_images

SEQUENCE_COLUMNS = ("sequence", "encounter")
"""Metadata columns naming a camera-trap burst / encounter; its near-duplicate frames never match each other."""


@dataclass(frozen=True)
class SplitData:
    """Every usable image of a data set and how it is split.

    Attributes:
        images: the usable rows (global identity codes; unknown animals negative).
        positions: ``{"train", "val", "test"}`` -> row positions in ``images``.
        class_index: ``(len(train),)`` class 0..C-1 of every training image, in training order.
        class_codes: ``(C,)`` identity code of every training class.
        groups: ``(N,)`` sequence code of every image (-1: none, or sequences not excluded).
        skipped: rows left out as bad images (``row``, ``line``, ``path``, ``reason``).
    """

    images: ImageDataset
    positions: dict[str, np.ndarray]
    class_index: np.ndarray
    class_codes: np.ndarray
    groups: np.ndarray
    skipped: pd.DataFrame

    def codes(self, split: str) -> np.ndarray:
        """Identity codes of the images of ``split``."""
        return self.images.labels[self.positions[split]]


def prepare_splits(source: MetadataSource, *, split: str, test_ratio: float, val_ratio: float, open_ratio: float,
                   val_unseen_ratio: float, seed: int, img_load: str, on_bad_image: str, unknown_markers: tuple[str, ...],
                   exclude_same_sequence: bool, progress: bool) -> SplitData:
    """Load and validate the metadata, check every image (``on_bad_image``: ``error`` or ``skip``), split it."""
    df = load_metadata(source.metadata, source.root, check_files=False, unknown_markers=unknown_markers)
    bad = check_images(df, source.root, img_load=img_load, csv_path=source.csv_path, progress=progress)
    if len(bad):
        name = "metadata DataFrame" if source.csv_path is None else f"metadata '{source.csv_path}'"
        message = bad_images_message(bad, len(df), name, source.csv_path)
        if on_bad_image == "error":
            raise ValueError(message)
        warnings.warn(message.rsplit("\n", 1)[0] + f"\non_bad_image='skip': these {len(bad)} rows are left out",
                      stacklevel=2)
        df = df.drop(index=bad["row"])
    # split on positions 0..M-1; the dataset keeps the metadata rows for its messages
    splits = split_metadata(df.reset_index(drop=True), split, test_ratio=test_ratio, val_ratio=val_ratio,
                            open_ratio=open_ratio, seed=seed, val_unseen_ratio=val_unseen_ratio)
    if splits["train"].empty:
        raise ValueError(f"split '{split}' left no training images; lower test_ratio/val_ratio")
    images = ImageDataset(df, root=source.root, img_load=img_load)
    positions = {name: frame.index.to_numpy() for name, frame in splits.items()}
    class_index, class_codes = contiguous_classes(images.labels[positions["train"]])
    groups = sequence_codes(df) if exclude_same_sequence else np.full(len(df), -1, dtype=np.int64)
    return SplitData(images, positions, class_index, class_codes, groups, bad)


def sequence_codes(metadata: pd.DataFrame) -> np.ndarray:
    """(N,) integer code of every row's sequence (first of ``SEQUENCE_COLUMNS`` present); -1 where blank."""
    column = next((name for name in SEQUENCE_COLUMNS if name in metadata.columns), None)
    if column is None:
        return np.full(len(metadata), -1, dtype=np.int64)
    values = metadata[column]
    blank = values.isna() | values.astype(str).str.strip().eq("")
    codes = np.full(len(metadata), -1, dtype=np.int64)
    codes[~blank.to_numpy()] = pd.factorize(values[~blank].astype(str))[0]
    return codes


def unmatched_queries(data: SplitData, stage: str, protocol: str) -> np.ndarray:
    """(Q,) bool: the ``stage`` query's identity is not in its gallery (training images, or the other images of
    the split in leave-one-out)."""
    codes = data.codes(stage)
    if protocol == "database":
        return ~np.isin(codes, data.class_codes)
    values, counts = np.unique(codes, return_counts=True)
    return (codes < 0) | np.isin(codes, values[counts == 1])


def summary(data: SplitData, *, protocol: str, unknown_markers: tuple[str, ...], on_bad_image: str) -> str:
    """Images, identities, single-image identities and unknown animals per split; queries whose identity is not
    in the gallery; rows skipped as bad images."""
    lines = [f"{'split':<6} {'images':>7} {'identities':>10} {'single-image':>12} {'unknown':>8}"]
    for name in SPLIT_NAMES:
        codes = data.codes(name)
        identities, counts = np.unique(codes[codes >= 0], return_counts=True)
        lines.append(f"{name:<6} {len(codes):>7} {len(identities):>10} {int((counts == 1).sum()):>12} "
                     f"{int((codes < 0).sum()):>8}")
    for stage in ("val", "test"):
        gallery = (f"gallery = {len(data.positions['train'])} training images" if protocol == "database"
                   else "gallery = the other images of the split")
        lines.append(f"{stage} ({protocol}): {len(data.positions[stage])} queries, "
                     f"{int(unmatched_queries(data, stage, protocol).sum())} without their identity in the gallery; "
                     f"{gallery}")
    val_codes = data.codes("val")
    unseen = np.setdiff1d(val_codes[val_codes >= 0], data.class_codes)
    lines.append(f"training classes: {len(data.class_codes)}; validation identities never trained on: {len(unseen)} "
                 f"({int(np.isin(val_codes, unseen).sum())} images: new individuals for the open-set threshold)")
    lines.append(f"unknown identity: {int((data.images.labels < 0).sum())} rows (markers {list(unknown_markers)}, "
                 "case and spaces ignored)")
    lines.append(f"skipped as bad images: {len(data.skipped)} rows (on_bad_image='{on_bad_image}')")
    return "\n".join(lines)
