"""Where the metadata comes from: a user's CSV or DataFrame, or the generated synthetic demo set.

A user's data folder is read-only to us: the synthetic set is written to its own cache folder
(``synthetic_dir``), never under ``root``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .metadata import find_metadata_csv

DEFAULT_SYNTHETIC_DIR = Path(".cache/reid_lightning/synthetic")


@dataclass(frozen=True)
class SyntheticSettings:
    """Size of the generated demo set (see :func:`~reid_lightning.data.synthetic.make_synthetic_individuals`)."""

    num_individuals: int = 40
    images_per_individual: int = 12
    image_size: int = 96


@dataclass(frozen=True)
class MetadataSource:
    """The metadata to load and the folder its paths are relative to.

    Attributes:
        metadata: a CSV path or a DataFrame.
        root: folder of the image paths (None: absolute paths or the current folder).
        synthetic: the source is the generated demo set.
    """

    metadata: Path | pd.DataFrame
    root: Path | None
    synthetic: bool = False

    @property
    def csv_path(self) -> Path | None:
        return None if isinstance(self.metadata, pd.DataFrame) else self.metadata


def uses_synthetic(*, synthetic: bool | None, root: str | None, metadata: str | pd.DataFrame | None) -> bool:
    """Whether the synthetic demo set is the data: ``synthetic`` when given, else when no data is named.

    ``synthetic=True`` together with a ``root`` or ``metadata`` is refused: the demo set would be used instead of
    the user's photos (and, before, was written into their folder)."""
    named = root is not None or metadata is not None
    if synthetic and named:
        given = f"--data.root {root}" if root is not None else "--data.metadata"
        raise ValueError(
            f"--data.synthetic true generates the demo set, but {given} names your own data. To use your photos, "
            "add --data.synthetic false (or remove `synthetic: true` from the config); to run the demo, leave "
            "--data.root and --data.metadata out (the demo set is written to --data.synthetic_dir, never into a "
            "data folder)")
    return bool(synthetic) if synthetic is not None else not named


def synthetic_source(folder: str | Path | None, settings: SyntheticSettings, seed: int) -> MetadataSource:
    """The demo set in ``folder`` (default ``.cache/reid_lightning/synthetic``), generated when missing."""
    # imported here, so that `python -m reid_lightning.data.synthetic` does not import itself twice
    from .synthetic import make_synthetic_individuals

    root = Path(folder if folder is not None else DEFAULT_SYNTHETIC_DIR).expanduser().resolve()
    csv = make_synthetic_individuals(root, num_individuals=settings.num_individuals,
                                     images_per_individual=settings.images_per_individual,
                                     image_size=settings.image_size, seed=seed)
    return MetadataSource(csv, root, synthetic=True)


def user_source(root: str | None, metadata: str | pd.DataFrame | None) -> MetadataSource:
    """The user's metadata: ``metadata`` (CSV relative to ``root`` or absolute, or a DataFrame), else
    ``<root>/metadata.csv``. Image paths are relative to ``root``, else to the CSV's folder."""
    folder = Path(root).expanduser() if root is not None else None
    if isinstance(metadata, pd.DataFrame):
        return MetadataSource(metadata, folder)
    if folder is not None and not folder.is_dir():
        raise FileNotFoundError(f"data root '{root}' (--data.root) is not a folder; set it to the image folder")
    if metadata is None:
        if folder is None:
            raise ValueError("no data given: pass --data.root (a folder with metadata.csv) or --data.metadata")
        csv = folder / "metadata.csv"
        if not csv.is_file():
            raise FileNotFoundError(f"no metadata given and '{csv}' does not exist; pass --data.metadata <csv path>, "
                                    "or leave --data.root out to run the synthetic demo set")
        return MetadataSource(csv.resolve(), folder)
    csv = find_metadata_csv(metadata, folder).resolve()
    # paths in a CSV are most naturally relative to the CSV itself
    return MetadataSource(csv, folder if folder is not None else csv.parent)
