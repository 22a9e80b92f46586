"""Load and validate image metadata in the wildlife-datasets column convention."""

from __future__ import annotations

import ast
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from .labels import UNKNOWN, UNKNOWN_MARKERS, is_unknown

REQUIRED_COLUMNS = ("image_id", "identity", "path")
MAX_REPORTED_ROWS = 5


def parse_bbox(value: object) -> list[float] | None:
    """Parse one bounding box ``[x, y, w, h]`` given as a sequence or its string repr; ``None`` if missing.

    Raises:
        ValueError: the value is not four finite numbers with positive width and height.
    """
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            value = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError) as error:
            raise ValueError(f"cannot parse {value!r} as a list [x, y, w, h]") from error
    try:
        box = [float(v) for v in value]  # type: ignore[union-attr]
    except (TypeError, ValueError) as error:
        raise ValueError(f"{value!r} is not a list of numbers [x, y, w, h]") from error
    if len(box) != 4 or not np.isfinite(box).all():
        raise ValueError(f"{value!r} must be four finite numbers [x, y, w, h]")
    if box[2] <= 0 or box[3] <= 0:
        raise ValueError(f"{value!r} has a non-positive width or height (format is [x, y, w, h])")
    return box


def _row_ref(row: int, csv_path: Path | None) -> str:
    # a CSV reader thinks in lines: the header is line 1
    return f"row {row}" if csv_path is None else f"row {row} (line {row + 2})"


def _row_refs(rows: np.ndarray | list[int], csv_path: Path | None) -> str:
    rows = list(rows)
    text = ", ".join(_row_ref(int(r), csv_path) for r in rows[:MAX_REPORTED_ROWS])
    more = f" and {len(rows) - MAX_REPORTED_ROWS} more" if len(rows) > MAX_REPORTED_ROWS else ""
    return text + more


def find_metadata_csv(metadata: str | Path, root: str | Path | None) -> Path:
    """The CSV ``metadata`` names: relative to ``root`` when given (which must exist), else as it is."""
    if root is not None and not Path(root).is_dir():
        raise FileNotFoundError(f"data root '{root}' is not a folder; set root (--data.root) to the image folder")
    candidate = Path(metadata) if Path(metadata).is_absolute() or root is None else Path(root) / metadata
    if not candidate.is_file():
        raise FileNotFoundError(
            f"metadata CSV not found: '{candidate}'; pass an absolute path or a path relative to root"
        )
    return candidate


def _read_csv(csv_path: Path) -> pd.DataFrame:
    # labels are names: "007" and "7" are two animals, and "NA" is a name, not a missing value
    text_columns = {column: str for column in ("image_id", "identity", "path")}
    try:
        return pd.read_csv(csv_path, dtype=text_columns, keep_default_na=False, na_values=[""])
    except pd.errors.EmptyDataError:
        raise ValueError(
            f"metadata '{csv_path}' is empty; it needs a header line with image_id, identity, path and one "
            "line per image"
        ) from None
    except (pd.errors.ParserError, UnicodeDecodeError) as error:
        raise ValueError(f"metadata '{csv_path}' is not a readable CSV file: {error}") from None


def _blank(values: pd.Series) -> np.ndarray:
    return (values.isna() | values.astype(str).str.strip().eq("")).to_numpy()


SEPARATORS = {";": "semicolons", "\t": "tabs", "|": "vertical bars"}


def _check_required(df: pd.DataFrame, source: str, csv_path: Path | None) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing and len(df.columns) == 1:
        header = str(df.columns[0])
        for separator, name in SEPARATORS.items():
            if all(column in header.split(separator) for column in REQUIRED_COLUMNS):
                raise ValueError(
                    f"{source} is separated by {name} ({separator!r}), not commas (its header: {header!r}); save "
                    "it as a comma-separated CSV (e.g. pandas: df.to_csv(path, index=False))")
    if missing:
        raise ValueError(
            f"{source}: missing required column(s) {missing}; found {list(df.columns)}. "
            f"Metadata needs {list(REQUIRED_COLUMNS)} (wildlife-datasets convention)"
        )
    for column in REQUIRED_COLUMNS:
        blank = np.flatnonzero(_blank(df[column]))
        if len(blank):
            raise ValueError(
                f"{source}: column '{column}' is empty in {_row_refs(blank, csv_path)}; every image needs "
                f"a value (use identity 'unknown' for animals of unknown identity)"
            )
    duplicated = np.flatnonzero(df["image_id"].duplicated(keep=False).to_numpy())
    if len(duplicated):
        values = df["image_id"].iloc[duplicated[:MAX_REPORTED_ROWS]].tolist()
        raise ValueError(
            f"{source}: column 'image_id' has duplicates in {_row_refs(duplicated, csv_path)} "
            f"(values {values}); image ids must be unique"
        )


def _parse_bboxes(df: pd.DataFrame, source: str, csv_path: Path | None) -> list[list[float] | None]:
    boxes = []
    for row, value in enumerate(df["bbox"].tolist()):
        try:
            boxes.append(parse_bbox(value))
        except ValueError as error:
            raise ValueError(f"{source}: column 'bbox', {_row_ref(row, csv_path)}: {error}") from None
    return boxes


def _parse_dates(df: pd.DataFrame, source: str, csv_path: Path | None) -> pd.Series:
    raw = df["date"]
    dates = pd.to_datetime(raw, errors="coerce", format="mixed")
    bad = np.flatnonzero((dates.isna() & ~_blank(raw)).to_numpy())
    if len(bad):
        values = raw.iloc[bad[:MAX_REPORTED_ROWS]].tolist()
        raise ValueError(
            f"{source}: column 'date' cannot be parsed in {_row_refs(bad, csv_path)} (values {values}); "
            "use ISO dates such as 2021-06-30 or 2021-06-30 14:05:00, or leave the cell empty"
        )
    return dates


def _check_files(df: pd.DataFrame, root: str | Path | None, source: str, csv_path: Path | None) -> None:
    base = Path(root) if root is not None else Path.cwd()
    paths = df["path"].astype(str).tolist()
    missing = np.flatnonzero([not os.path.isfile(base / p) for p in paths])
    if len(missing):
        shown = ", ".join(
            f"{_row_ref(int(r), csv_path)}: '{base / paths[r]}'" for r in missing[:MAX_REPORTED_ROWS]
        )
        raise ValueError(
            f"{source}: {len(missing)} of {len(df)} image files not found ({shown}). Image paths are read "
            f"relative to root='{root}'; set root to the folder the 'path' column is relative to, or fix "
            "the 'path' column"
        )


def load_metadata(
    metadata: str | Path | pd.DataFrame,
    root: str | Path | None = None,
    *,
    check_files: bool = True,
    unknown_markers: Sequence[str] = UNKNOWN_MARKERS,
) -> pd.DataFrame:
    """Read and validate metadata with columns ``image_id``, ``identity``, ``path``.

    Optional columns: ``bbox`` ([x, y, w, h], list or its string repr; empty means the full image),
    ``date``, ``species``, ``split``. Identities are strings (``"007"`` is not ``"7"``); any of
    ``unknown_markers`` (case and surrounding whitespace ignored) marks an animal of unknown identity and is
    rewritten to ``"unknown"``.

    Args:
        metadata: a CSV path (relative to ``root`` or absolute) or a DataFrame.
        root: folder the ``path`` column is relative to (``None``: current directory or absolute paths).
        check_files: verify that every image file exists.
        unknown_markers: identity names meaning "individual not known".

    Returns:
        A new DataFrame (the caller's frame is never modified) with a fresh ``0..N-1`` index, ``identity``
        as strings, ``bbox`` parsed to lists (or ``None``) and ``date`` as datetimes.
    """
    csv_path = None
    if isinstance(metadata, pd.DataFrame):
        df, source = metadata.copy(), "metadata DataFrame"
    elif isinstance(metadata, (str, Path)):
        csv_path = find_metadata_csv(metadata, root)
        df, source = _read_csv(csv_path), f"metadata '{csv_path}'"
    else:
        raise TypeError(f"metadata must be a CSV path or a pandas DataFrame, got {type(metadata).__name__}")
    df = df.reset_index(drop=True)
    if df.empty:
        raise ValueError(f"{source} has no rows")
    _check_required(df, source, csv_path)
    df["identity"] = df["identity"].astype(str).str.strip()
    df.loc[is_unknown(df["identity"], unknown_markers), "identity"] = UNKNOWN
    df["image_id"] = df["image_id"].astype(str)
    df["path"] = df["path"].astype(str)
    if "bbox" in df.columns:
        df["bbox"] = pd.Series(_parse_bboxes(df, source, csv_path), index=df.index, dtype=object)
    if "date" in df.columns:
        df["date"] = _parse_dates(df, source, csv_path)
    if check_files:
        _check_files(df, root, source, csv_path)
    return df
