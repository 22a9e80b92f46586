"""A small predict run folder for review tests, written by hand: what ``train.py predict`` writes, with known truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from reid_lightning.runtime.answers import PREDICTION_COLUMNS

# (true animal, answered identity, proposed identity, confidence of the answer)
NEW_PHOTOS = (
    [("K1", "K1", "K1", 0.99)] * 3 + [("K1", "K1", "K1", 0.80)] * 2  # known, right
    + [("K2", "K3", "K3", 0.55)] * 2  # a known animal named as another
    + [("K4", "new_individual", "new_003", 0.6)] * 2  # a known animal answered new, grouped alone
    + [("A", "new_individual", "new_001", 0.7)] * 6  # a new animal ...
    + [("B", "new_individual", "new_001", 0.6)]  # ... with a photo of another one in its group
    + [("B", "new_individual", "new_002", 0.7)] * 3  # B's other photos
    + [("C", "K1", "K1", 0.52)]  # a new animal named as a known one
)
KNOWN = ("K0", "K1", "K2", "K3", "K4")


def make_review_run(folder: Path, *, names: dict[str, str] | None = None) -> tuple[Path, list[str]]:
    """A run folder (``predictions.csv`` and its companions) and the true animal of every new photo.

    ``names`` renames known individuals in the gallery (e.g. to a name with markup)."""
    names = names or {}
    photos = folder / "photos"
    (photos / "new").mkdir(parents=True, exist_ok=True)
    (photos / "gallery").mkdir(parents=True, exist_ok=True)
    run = folder / "run"
    run.mkdir(parents=True, exist_ok=True)
    colours = {animal: (37 * i % 255, 91 * i % 255, 53 * i % 255)
               for i, animal in enumerate(("K0", "K1", "K2", "K3", "K4", "A", "B", "C"))}
    gallery = []
    for identity in KNOWN:
        for shot in range(2):
            path = photos / "gallery" / f"{identity}_{shot}.png"
            Image.new("RGB", (24, 24), colours[identity]).save(path)
            gallery.append({"set": "gallery", "image_id": f"{identity}_{shot}", "identity": names.get(identity, identity),
                            "path": str(path), "bbox": ""})
    rows, new = [], []
    truth = [animal for animal, *_ in NEW_PHOTOS]
    for row, (animal, answer, proposed, confidence) in enumerate(NEW_PHOTOS):
        path = photos / "new" / f"{row:03d}.png"
        Image.new("RGB", (24, 24), colours[animal]).save(path)
        is_new = answer == "new_individual"
        rows.append({"image_id": f"{row:03d}.png", "path": str(path), "identity": names.get(answer, answer),
                     "confidence": confidence, "score": 0.5, "is_new": is_new,
                     "top5": json.dumps([[names.get(answer if not is_new else "K0", "K0"), 0.5]]),
                     "gallery_image": "", "proposed_identity": names.get(proposed, proposed)})
        new.append({"set": "new", "image_id": f"{row:03d}.png", "identity": "unknown", "path": str(path), "bbox": ""})
    pairs = []
    for row, (animal, answer, _, confidence) in enumerate(NEW_PHOTOS):
        if answer != "new_individual":
            pairs.append((row, "individual", names.get(answer, answer), 0.7, confidence))
        if animal in KNOWN and answer != animal:
            pairs.append((row, "individual", names.get(animal, animal), 0.6, 0.45))
        for other, (other_animal, *_) in enumerate(NEW_PHOTOS):
            if other != row and other_animal == animal:
                pairs.append((row, "photo", str(other), 0.8, 0.9 if animal != "B" else 0.75))
    rng = np.random.default_rng(0)
    for row in range(len(NEW_PHOTOS)):  # weak evidence between different animals
        other = int(rng.integers(len(NEW_PHOTOS)))
        if truth[other] != truth[row]:
            pairs.append((row, "photo", str(other), 0.3, 0.2))
    pd.DataFrame(rows, columns=list(PREDICTION_COLUMNS)).to_csv(run / "predictions.csv", index=False)
    pd.DataFrame(pairs, columns=["row", "kind", "candidate", "score", "probability"]).to_csv(
        run / "predictions_pairs.csv", index=False)
    pd.DataFrame(new + gallery).to_csv(run / "predictions_photos.csv", index=False)
    return run, truth
