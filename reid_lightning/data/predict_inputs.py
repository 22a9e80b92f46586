"""The photos ``predict`` identifies (a folder or a CSV) and an optional gallery CSV of known individuals."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .dataset import ImageDataset
from .metadata import find_metadata_csv, load_metadata
from .validation import bad_images_message, check_images

PREDICT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")


@dataclass(frozen=True)
class PredictImages:
    """Readable photos to identify and the rows left out because their file cannot be read.

    Attributes:
        dataset: the readable photos (identity ``unknown``), ``path`` as the user gave it.
        unreadable: columns ``row``, ``line``, ``path``, ``reason`` (see ``check_images``).
    """

    dataset: ImageDataset
    unreadable: pd.DataFrame


def predict_frame(*, predict_dir: str | None, predict_csv: str | None) -> tuple[pd.DataFrame, Path | None, Path | None]:
    """``(metadata, root, csv path)`` of the photos to identify: every image file under ``predict_dir`` (sorted,
    recursive; ``path`` is the folder as given joined with the file's place in it, so links are not resolved to
    their targets; ``image_id`` is that place), or the rows of ``predict_csv`` (``path`` relative to the CSV;
    optional ``image_id``, ``bbox``)."""
    if predict_dir is not None:
        folder = Path(predict_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--data.predict_dir '{predict_dir}' is not a folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PREDICT_EXTENSIONS)
        if not files:
            raise ValueError(f"--data.predict_dir '{predict_dir}' holds no image ({', '.join(PREDICT_EXTENSIONS)})")
        frame = pd.DataFrame({"image_id": [p.relative_to(folder).as_posix() for p in files],
                              "path": [str(p) for p in files], "identity": "unknown"})
        return load_metadata(frame, None, check_files=False), None, None
    csv = Path(predict_csv).expanduser().resolve()  # type: ignore[arg-type]
    if not csv.is_file():
        raise FileNotFoundError(f"--data.predict_csv '{predict_csv}' does not exist")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "path" not in frame.columns:
        raise ValueError(f"--data.predict_csv '{csv}' needs a 'path' column; found {list(frame.columns)}")
    if "image_id" not in frame.columns:
        frame["image_id"] = frame["path"]
    frame["identity"] = "unknown"
    if "bbox" in frame.columns:
        frame["bbox"] = frame["bbox"].replace("", None)
    return load_metadata(frame, csv.parent, check_files=False), csv.parent, csv


def load_predict_images(*, predict_dir: str | None, predict_csv: str | None, progress: bool) -> PredictImages:
    """The photos of ``predict_dir`` / ``predict_csv``, every file checked; unreadable ones are left out with a
    warning naming them (an error when none is readable)."""
    frame, root, csv_path = predict_frame(predict_dir=predict_dir, predict_csv=predict_csv)
    bad = check_images(frame, root, img_load="auto", csv_path=csv_path, progress=progress)
    if len(bad):
        source = f"predict_csv '{csv_path}'" if csv_path is not None else f"predict_dir '{predict_dir}'"
        warnings.warn(f"{source}: {len(bad)} of {len(frame)} images cannot be read and get no prediction: "
                      + "; ".join(f"'{row.path}': {row.reason}" for row in bad.head(10).itertuples())
                      + (" ..." if len(bad) > 10 else ""), stacklevel=2)
        frame = frame.drop(index=bad["row"])
    if frame.empty:
        raise ValueError(f"none of the {len(bad)} images to predict can be read (see the list above)")
    return PredictImages(ImageDataset(frame, root=root, img_load="auto"), bad)


def load_gallery_csv(gallery_csv: str, *, unknown_markers: tuple[str, ...], progress: bool) -> ImageDataset:
    """The known individuals of ``gallery_csv`` (paths relative to the CSV; rows of unknown identity dropped);
    every image must be readable."""
    csv = find_metadata_csv(gallery_csv, None).resolve()
    frame = load_metadata(csv, csv.parent, check_files=False, unknown_markers=unknown_markers)
    bad = check_images(frame, csv.parent, img_load="auto", csv_path=csv, progress=progress)
    if len(bad):
        raise ValueError(bad_images_message(bad, len(frame), f"gallery_csv '{csv}'", csv))
    return ImageDataset(frame[frame["identity"] != "unknown"], root=csv.parent, img_load="auto")
