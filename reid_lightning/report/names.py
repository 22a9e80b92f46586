"""How the report names an image: by what the user can look up (``image_id``, file), never by a dataset position."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd


def _column(dataset, name: str | None) -> list | None:
    metadata = getattr(dataset, "metadata", None)
    if name is None or not isinstance(metadata, pd.DataFrame) or name not in metadata.columns:
        return None
    return metadata[name].tolist()


def _missing(value) -> bool:
    return bool(pd.isna(value)) or str(value) in ("", "nan")


def image_files(dataset, indices: Sequence[int]) -> list[str] | None:
    """The files of images ``indices`` as the dataset's metadata lists them (relative to its root), or None for
    a dataset without file paths. A negative index (no candidate) gives ``""``."""
    files = _column(dataset, getattr(dataset, "col_path", "path"))
    if files is not None:
        return ["" if i < 0 else str(files[i]) for i in map(int, indices)]
    if hasattr(dataset, "image_path"):
        return ["" if i < 0 else str(dataset.image_path(i)) for i in map(int, indices)]
    return None


def image_names(dataset, indices: Sequence[int]) -> list[str]:
    """Names of images ``indices``: the metadata's ``image_id``, else the file (:func:`image_files`), else the
    index itself (datasets without metadata). A negative index (no candidate) gives ``""``."""
    indices = [int(i) for i in indices]
    ids = _column(dataset, "image_id")
    files = image_files(dataset, indices)
    names = []
    for position, index in enumerate(indices):
        if index < 0:
            names.append("")
        elif ids is not None and not _missing(ids[index]):
            names.append(str(ids[index]))
        elif files is not None:
            names.append(files[position])
        else:
            names.append(str(index))
    return names


def shorten(text: str, width: int, keep_end: bool = False) -> str:
    """``text`` cut to ``width`` characters with an ellipsis; ``keep_end`` keeps the end (a file's name is at the
    end of its path, a counter at the end of an id)."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1:] if keep_end else text[: width - 1] + "…"
