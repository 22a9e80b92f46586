"""``ReviewRun``: what a review reads from the folder ``train.py predict`` wrote, checked."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..rundir import companion_path
from ..runtime.answers import PREDICTION_COLUMNS, REVIEW_PAIR_COLUMNS

PHOTO_COLUMNS = ("set", "image_id", "identity", "path", "bbox")


@dataclass(frozen=True)
class ReviewRun:
    """The answers of one ``predict`` run.

    Attributes:
        predictions_csv: the ``predictions.csv`` reviewed.
        predictions: its rows (one per new photo).
        pairs: ``predictions_pairs.csv``: candidate pairs with calibrated probabilities.
        new_photos: ``predictions_photos.csv`` rows of the new photos, in the order of ``predictions``.
        gallery: ``predictions_photos.csv`` rows of the known individuals' photos.
        fingerprint: sha256 of ``predictions.csv`` (a review's decisions belong to these answers only).
    """

    predictions_csv: Path
    predictions: pd.DataFrame
    pairs: pd.DataFrame
    new_photos: pd.DataFrame
    gallery: pd.DataFrame
    fingerprint: str

    @classmethod
    def load(cls, run: str | Path) -> ReviewRun:
        """From a run folder holding ``predictions.csv`` or from a predictions CSV itself."""
        run = Path(run).expanduser()
        csv = run / "predictions.csv" if run.is_dir() else run
        if not csv.is_file():
            where = f"the folder '{run}' holds no predictions.csv" if run.is_dir() else f"'{run}' does not exist"
            raise FileNotFoundError(f"{where}: pass the folder `train.py predict` wrote (its last line: "
                                    "'predictions written to ...')")
        predictions = _read(csv, PREDICTION_COLUMNS, what="predictions")
        pairs = _read(companion_path(csv, "pairs"), REVIEW_PAIR_COLUMNS, what="pairs", of=csv)
        photos = _read(companion_path(csv, "photos"), PHOTO_COLUMNS, what="photos", of=csv)
        new, gallery = photos[photos["set"] == "new"].reset_index(drop=True), \
            photos[photos["set"] == "gallery"].reset_index(drop=True)
        if len(new) != len(predictions):
            raise ValueError(f"{companion_path(csv, 'photos')} lists {len(new)} new photos for the {len(predictions)} "
                             f"rows of {csv}: both must come from the same predict run; run predict again")
        missing = [path for path in pd.concat([new["path"], gallery["path"]]) if not os.path.isfile(path)]
        if missing:
            raise FileNotFoundError(f"{csv}: {len(missing)} of {len(new) + len(gallery)} photos are missing (first: "
                                    f"'{missing[0]}'); put them back where predict read them, or run predict again")
        pairs["probability"] = pd.to_numeric(pairs["probability"], errors="coerce")
        return cls(predictions_csv=csv.resolve(), predictions=predictions, pairs=pairs, new_photos=new,
                   gallery=gallery, fingerprint=hashlib.sha256(csv.read_bytes()).hexdigest())

    @property
    def known(self) -> list[str]:
        """The known individuals (the gallery's), sorted."""
        return sorted(self.gallery["identity"].astype(str).unique())


def _read(path: Path, columns: tuple[str, ...], *, what: str, of: Path | None = None) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"'{path}' is missing: the review needs the {what} file `train.py predict` writes "
                                f"beside {of}; run predict again with this version")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise ValueError(f"'{path}' lacks the columns {absent} (found {list(frame.columns)}): is it a {what} file "
                         "written by `train.py predict`?")
    if frame.empty:
        raise ValueError(f"'{path}' has no rows")
    if "row" in frame.columns:
        frame["row"] = frame["row"].astype(int)
        frame["score"] = pd.to_numeric(frame["score"], errors="coerce")
    return frame
