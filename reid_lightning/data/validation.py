"""One check of every image before a run: all bad rows reported together, results cached by size and mtime.

An image passes when it is a non-empty file that Pillow can verify and fully decode, and, when bounding boxes
are used, its box overlaps the image. Results are cached per data root in the user's cache folder
(``$REID_LIGHTNING_CACHE`` or ``$XDG_CACHE_HOME/reid_lightning``, else ``~/.cache/reid_lightning``), never in
the data folder, which may be read-only; a file that changed size or mtime is checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from ..runtime.images import FileCheck, check_image_file, clip_box
from .dataset import resolve_img_load
from .metadata import _row_ref, _row_refs, parse_bbox

BAD_IMAGE_POLICIES = ("error", "skip")
CACHE_ENV_VAR = "REID_LIGHTNING_CACHE"
CACHE_VERSION = 1
BAD_ROW_COLUMNS = ("row", "line", "path", "reason")



def cache_dir() -> Path:
    """Folder of reid_lightning's caches (see the module docstring)."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reid_lightning"


class _CheckCache:
    """``{absolute path: FileCheck}`` of one data root, stored as JSON; unreadable or unwritable means empty."""

    def __init__(self, root: Path) -> None:
        key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
        self.path = cache_dir() / "image_checks" / f"{key}.json"
        try:
            stored = json.loads(self.path.read_text())
            self.entries = stored["entries"] if stored.get("version") == CACHE_VERSION else {}
        except (OSError, ValueError, KeyError, TypeError):
            self.entries = {}

    def get(self, path: str) -> FileCheck | None:
        entry = self.entries.get(path)
        if entry is None:
            return None
        try:
            stat = os.stat(path)
        except OSError:
            return None
        return tuple(entry) if (entry[0], entry[1]) == (stat.st_size, stat.st_mtime_ns) else None

    def save(self, results: dict[str, FileCheck]) -> None:
        self.entries.update({path: list(check) for path, check in results.items() if check[0] > 0})
        try:  # temp file + rename: a concurrent run never reads half a file
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temp = self.path.with_suffix(f".{os.getpid()}.tmp")
            temp.write_text(json.dumps({"version": CACHE_VERSION, "entries": self.entries}))
            os.replace(temp, self.path)
        except OSError as error:
            warnings.warn(f"image check cache not written to '{self.path}' ({error}); set {CACHE_ENV_VAR} to a "
                          "writable folder to make the next run's check instant", stacklevel=3)


def check_images(
    df: pd.DataFrame,
    root: str | Path | None,
    *,
    img_load: str = "auto",
    csv_path: Path | None = None,
    progress: bool = True,
    workers: int | None = None,
) -> pd.DataFrame:
    """Check every image of validated metadata (``df`` from :func:`load_metadata`); return the bad rows.

    Warns once (naming the rows) about bounding boxes that reach outside their image: they are clipped.

    Args:
        df: metadata with ``path`` (and ``bbox`` for ``img_load="bbox"``) and a ``0..N-1`` index.
        root: folder the paths are relative to (``None``: current directory).
        img_load: ``"bbox"`` (or ``"auto"`` with a ``bbox`` column) also checks that every box overlaps its image.
        csv_path: the CSV ``df`` was read from, so that rows are also named by their line.
        progress: show a progress bar while files are checked.
        workers: parallel threads (default: up to 8).

    Returns:
        DataFrame with columns ``row`` (index of ``df``), ``line`` (CSV line, header = 1; ``None`` without a
        CSV), ``path`` and ``reason``; empty when every image is fine.
    """
    base = Path(root) if root is not None else Path.cwd()
    paths = [str((base / p).absolute()) for p in df["path"].astype(str)]
    cache = _CheckCache(base)
    results = {path: cache.get(path) for path in dict.fromkeys(paths)}
    todo = [path for path, check in results.items() if check is None]
    if todo:
        with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
            checked = list(tqdm(pool.map(check_image_file, todo), total=len(todo), desc="checking images",
                                unit="img", disable=not progress, leave=False))
        fresh = dict(zip(todo, checked, strict=True))
        results.update(fresh)
        cache.save(fresh)
    bad, clipped = [], []
    boxes = df["bbox"].tolist() if resolve_img_load(img_load, df.columns) == "bbox" else [None] * len(df)
    for row, path, box in zip(df.index, paths, boxes, strict=True):
        _, _, width, height, problem = results[path]
        box = parse_bbox(box)
        if problem is None and box is not None:
            pixels = clip_box(box, (width, height))
            if pixels is None:
                problem = f"bbox {box} does not overlap the {width}x{height} image"
            elif pixels != (round(box[0]), round(box[1]), round(box[0] + box[2]), round(box[1] + box[3])):
                clipped.append(int(row))
        if problem is not None:
            bad.append((int(row), int(row) + 2 if csv_path is not None else None, path, problem))
    if clipped:
        warnings.warn(f"{len(clipped)} bounding boxes reach outside their image and are clipped to it: "
                      f"{_row_refs(clipped, csv_path)}", stacklevel=2)
    return pd.DataFrame(bad, columns=list(BAD_ROW_COLUMNS))


def bad_images_message(bad: pd.DataFrame, total: int, source: str, csv_path: Path | None) -> str:
    """Every bad row, one a line, and what to do about them."""
    lines = [f"{source}: {len(bad)} of {total} images cannot be used:"]
    for row in bad.itertuples(index=False):
        lines.append(f"  {_row_ref(row.row, csv_path)}: '{row.path}': {row.reason}")
    lines.append("Fix or remove these rows, or pass --data.on_bad_image skip (on_bad_image='skip') to leave them "
                 "out of the run.")
    return "\n".join(lines)
