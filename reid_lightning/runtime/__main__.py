"""``python -m reid_lightning.runtime BUNDLE_DIR --photos DIR --output predictions.csv``: the answers of
``train.py predict`` from an exported bundle, without torch."""

from __future__ import annotations

import argparse
import csv
import math
import sys
from pathlib import Path

from .answers import PREDICTION_COLUMNS
from .bundle import BundleError

PHOTO_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")  # what predict's --data.predict_dir reads


def _cell(value) -> object:
    return "" if isinstance(value, float) and math.isnan(value) else value


def _write_csv(path: Path, columns, rows) -> None:
    with open(path, "x", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(columns)
        writer.writerows([_cell(row[name]) for name in columns] for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reid_lightning.runtime", description=__doc__)
    parser.add_argument("bundle", help="folder written by python -m reid_lightning.export")
    parser.add_argument("--photos", required=True, help="folder of new photos (searched recursively)")
    parser.add_argument("--output", required=True, help="predictions.csv to write (never replaced)")
    parser.add_argument("--batch_size", type=int, default=32)
    args = parser.parse_args(argv)
    folder, output = Path(args.photos).expanduser(), Path(args.output).expanduser()
    try:
        if not folder.is_dir():
            raise ValueError(f"--photos '{args.photos}' is not a folder")
        if output.exists():
            raise ValueError(f"--output '{output}' exists: give a new file name")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PHOTO_EXTENSIONS)
        if not files:
            raise ValueError(f"--photos '{args.photos}' holds no image ({', '.join(PHOTO_EXTENSIONS)})")
        from .identifier import Identifier

        identifier = Identifier(args.bundle, batch_size=args.batch_size)
        rows, unreadable = identifier.identify([str(p) for p in files],
                                               image_ids=[p.relative_to(folder).as_posix() for p in files],
                                               progress=True)
    except (BundleError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    output.parent.mkdir(parents=True, exist_ok=True)
    if unreadable:
        listed = output.with_name("unreadable_images.csv")
        _write_csv(listed, ("row", "line", "path", "reason"), unreadable)
        print(f"{len(unreadable)} images could not be read and have no prediction; listed in {listed}")
    _write_csv(output, PREDICTION_COLUMNS, rows)
    new = sum(bool(row["is_new"]) for row in rows)
    print(f"{len(rows)} photos: {len(rows) - new} known individuals, {new} new (threshold "
          f"{identifier.open_set['open_set_threshold']:.4f} on the {identifier.open_set.get('score', 'score')}); "
          "confidence = calibrated probability that the answer is right, score = the raw top-1 score")
    print(f"predictions written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
