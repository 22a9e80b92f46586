"""The exported bundle: one folder a deployed identifier needs, read and checked with the standard library and
numpy (no pickle: JSON, CSV and ``.npy`` without objects).

Files: ``manifest.json`` (written last: a folder without it is an unfinished export), ``model.onnx`` (uint8 RGB
``(B, H, W, 3)`` -> embeddings ``(B, D)``, normalisation inside), ``gallery_embeddings.npy`` ``(G, D)`` float32,
``gallery.csv`` (``image_id, identity, path``), ``open_set.json`` (threshold, calibrators, discovery cut).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FORMAT = "reid-lightning-bundle"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL = "model.onnx"
GALLERY_EMBEDDINGS = "gallery_embeddings.npy"
GALLERY_IMAGES = "gallery.csv"
OPEN_SET = "open_set.json"
GALLERY_COLUMNS = ("image_id", "identity", "path")


class BundleError(ValueError):
    """A bundle that cannot be used; the message names the file and what to do."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entry(path: Path) -> dict[str, Any]:
    """What the manifest records of a file: its size and SHA-256."""
    return {"bytes": path.stat().st_size, "sha256": sha256(path)}


@dataclass(frozen=True)
class Gallery:
    """The known individuals: ``embeddings (G, D)`` float32 and, per image, ``image_ids``, ``identities``,
    ``paths`` (G,)."""

    embeddings: np.ndarray
    image_ids: list[str]
    identities: list[str]
    paths: list[str]

    def __post_init__(self) -> None:
        if not (len(self.embeddings) == len(self.image_ids) == len(self.identities) == len(self.paths)):
            raise BundleError(f"the gallery has {len(self.embeddings)} embeddings for {len(self.image_ids)} images")


def read_manifest(folder: Path) -> dict[str, Any]:
    """The bundle's manifest, after checking the format version and that every file it lists is complete."""
    if not folder.is_dir():
        raise BundleError(f"bundle '{folder}' is not a folder: pass the --output folder of reid_lightning.export")
    path = folder / MANIFEST
    if not path.is_file():
        raise BundleError(f"'{path}' is missing: '{folder}' is not a finished bundle (export it again)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"'{path}' cannot be read ({error}): export the bundle again") from error
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BundleError(f"'{path}' is not a reid-lightning bundle manifest (format {FORMAT!r} expected)")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise BundleError(f"'{path}' is bundle format version {version!r}; this runtime reads version "
                          f"{FORMAT_VERSION}: export it again with this version of reid-lightning, or use the "
                          "version that wrote it")
    for name, entry in manifest.get("files", {}).items():
        file = folder / name
        if not file.is_file():
            raise BundleError(f"'{file}' is missing from the bundle: export it again")
        if file.stat().st_size != entry["bytes"] or sha256(file) != entry["sha256"]:
            raise BundleError(f"'{file}' is truncated or changed ({file.stat().st_size} bytes, the manifest says "
                              f"{entry['bytes']} and another SHA-256): export the bundle again")
    return manifest


def read_gallery(folder: Path) -> Gallery:
    embeddings_path, images_path = folder / GALLERY_EMBEDDINGS, folder / GALLERY_IMAGES
    try:
        embeddings = np.load(embeddings_path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise BundleError(f"'{embeddings_path}' cannot be read as a numpy array ({error})") from error
    with open(images_path, newline="", encoding="utf-8") as file:
        rows = list(csv.DictReader(file))
    if rows and set(GALLERY_COLUMNS) - set(rows[0]):
        raise BundleError(f"'{images_path}' needs the columns {list(GALLERY_COLUMNS)}")
    if embeddings.ndim != 2 or embeddings.dtype != np.float32:
        raise BundleError(f"'{embeddings_path}' holds {embeddings.dtype} {embeddings.shape}, not (G, D) float32")
    return Gallery(embeddings, [r["image_id"] for r in rows], [r["identity"] for r in rows],
                   [r["path"] for r in rows])


def write_gallery(folder: Path, gallery: Gallery) -> None:
    np.save(folder / GALLERY_EMBEDDINGS, np.ascontiguousarray(gallery.embeddings, dtype=np.float32))
    with open(folder / GALLERY_IMAGES, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(GALLERY_COLUMNS)
        writer.writerows(zip(gallery.image_ids, gallery.identities, gallery.paths, strict=True))


def read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise BundleError(f"'{path}' cannot be read ({error}): export the bundle again") from error


def finish(folder: Path, manifest: dict[str, Any]) -> None:
    """Record every file of ``folder`` in ``manifest`` and write it last (the bundle is complete from then)."""
    manifest["files"] = {p.name: file_entry(p) for p in sorted(folder.iterdir()) if p.name != MANIFEST}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2))


@contextlib.contextmanager
def staged(output: Path) -> Iterator[Path]:
    """A temporary folder beside the new folder ``output``, renamed to it when the block ends without error and
    removed otherwise, so a half-written bundle never sits at ``output``."""
    if output.exists():
        raise FileExistsError(f"'{output}' exists: give a new folder (a bundle is never replaced)")
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", dir=output.parent))
    try:
        yield staging
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
