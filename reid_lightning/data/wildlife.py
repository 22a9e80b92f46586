"""Adapter for the optional ``wildlife-datasets`` package (AGPL-3.0; never a hard dependency)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pandas as pd

INSTALL_HINT = (
    "the optional package 'wildlife-datasets' (AGPL-3.0) is not installed; install it with "
    "`pip install wildlife-datasets`, or export its metadata to a CSV with columns image_id, identity, path"
)


def from_wildlife_datasets(dataset_or_class_name: object, root: str | Path | None = None) -> pd.DataFrame:
    """Metadata of a wildlife-datasets dataset, ready for :func:`load_metadata` with the same ``root``.

    Args:
        dataset_or_class_name: a dataset object (anything with a ``df`` or ``metadata`` DataFrame), or the
            name of a class in ``wildlife_datasets.datasets`` such as ``"MacaqueFaces"``.
        root: folder the dataset was downloaded to (needed when a class name is given).

    Returns:
        A copy of the dataset's metadata DataFrame (paths relative to ``root``).
    """
    dataset = dataset_or_class_name
    if isinstance(dataset, str):
        if root is None:
            raise ValueError(f"root is needed to load the wildlife-datasets dataset '{dataset}'")
        try:
            module = importlib.import_module("wildlife_datasets.datasets")
        except ImportError as error:
            raise ImportError(INSTALL_HINT) from error
        if not hasattr(module, dataset):
            raise ValueError(f"wildlife_datasets.datasets has no dataset class '{dataset}'")
        dataset = getattr(module, dataset)(str(root))
    for attribute in ("df", "metadata"):
        frame = getattr(dataset, attribute, None)
        if isinstance(frame, pd.DataFrame):
            return frame.copy()
    raise TypeError(
        f"{type(dataset).__name__} has no 'df' or 'metadata' DataFrame; pass a wildlife-datasets dataset "
        "or one of its class names"
    )
