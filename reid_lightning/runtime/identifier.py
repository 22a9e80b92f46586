"""``Identifier``: "who is this, or a new individual?" from an exported bundle, with onnxruntime, numpy and
Pillow only."""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import bundle
from .answers import PREDICTION_COLUMNS, answer_columns, answered_new, proposed_identities
from .grouping import DEFAULT_K, group_new_photos
from .images import check_image_file, crop_to_box, load_rgb

SCORES_PER_CHUNK = 1 << 22


class Identifier:
    """Answers new photos as ``train.py predict`` does on the global score: embeddings from the bundle's ONNX
    network, the top ``candidates`` gallery images by cosine, the open-set threshold, the calibrated confidence
    and the grouping of the photos answered new.

    Args:
        bundle_dir: folder written by ``python -m reid_lightning.export``.
        batch_size: photos embedded at once.
        threads: onnxruntime intra-op threads (None: onnxruntime's default).
    """

    def __init__(self, bundle_dir: str | Path, *, batch_size: int = 32, threads: int | None = None) -> None:
        import onnxruntime

        self.folder = Path(bundle_dir).expanduser()
        self.manifest = bundle.read_manifest(self.folder)
        self.gallery = bundle.read_gallery(self.folder)
        self.open_set = bundle.read_json(self.folder / bundle.OPEN_SET)
        if self.open_set.get("open_set_threshold") is None:
            raise bundle.BundleError(f"'{self.folder / bundle.OPEN_SET}' holds no open-set threshold")
        self.height, self.width = self.manifest["input"]["height"], self.manifest["input"]["width"]
        self.candidates = int(self.manifest["search"]["candidates"])
        self.batch_size = batch_size
        options = onnxruntime.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = onnxruntime.InferenceSession(str(self.folder / bundle.MODEL), options,
                                                        providers=["CPUExecutionProvider"])
        except Exception as error:
            raise bundle.BundleError(f"'{self.folder / bundle.MODEL}' cannot be loaded by onnxruntime "
                                     f"({error})") from error

    # ------------------------------------------------------------------ embedding
    def pixels(self, image: Image.Image) -> np.ndarray:
        """``(H, W, 3)`` uint8 input of one decoded RGB photo: resized as the training side's evaluation
        transform does (PIL bilinear to the bundle's size)."""
        if image.size != (self.width, self.height):
            image = image.resize((self.width, self.height), Image.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    def embed_images(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(N, D)`` float32 embeddings of decoded RGB photos."""
        outputs = [np.zeros((0, self.gallery.embeddings.shape[1]), dtype=np.float32)]
        for start in range(0, len(images), self.batch_size):
            batch = np.stack([self.pixels(image) for image in images[start:start + self.batch_size]])
            outputs.append(self.session.run(None, {self.manifest["input"]["name"]: batch})[0].astype(np.float32))
        return np.concatenate(outputs)

    def embed(self, paths: Sequence[str | Path], boxes: Sequence[list[float] | None] | None = None, *,
              progress: bool = False) -> np.ndarray:
        """``(N, D)`` embeddings of the photos at ``paths`` (optionally cropped to ``boxes`` ``[x, y, w, h]``),
        read a batch at a time; ``progress`` counts the photos done on stderr."""
        boxes = [None] * len(paths) if boxes is None else list(boxes)
        outputs = []
        for start in range(0, len(paths), self.batch_size):
            images = []
            for path, box in zip(paths[start:start + self.batch_size], boxes[start:start + self.batch_size],
                                 strict=True):
                image = load_rgb(path)
                images.append(image if box is None else crop_to_box(image, box, where=str(path)))
            outputs.append(self.embed_images(images))
            if progress:
                done = min(start + self.batch_size, len(paths))
                print(f"\rembedding photos: {done}/{len(paths)}", end="\n" if done == len(paths) else "",
                      file=sys.stderr, flush=True)
        return np.concatenate(outputs) if outputs else self.embed_images([])

    # ------------------------------------------------------------------ answers
    def search(self, embeddings: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(scores (Q, K), indices (Q, K))`` of the top ``candidates`` gallery images by cosine, best first
        (equal scores by gallery order); ``K = min(candidates, G)``."""
        gallery = self.gallery.embeddings
        k = min(self.candidates, len(gallery))
        norms = np.maximum(np.linalg.norm(gallery, axis=1), 1e-12).astype(np.float32)
        queries = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        rows = max(1, SCORES_PER_CHUNK // max(len(gallery), 1))
        scores, indices = np.zeros((len(queries), k), np.float32), np.zeros((len(queries), k), np.int64)
        for start in range(0, len(queries), rows):
            block = np.clip((queries[start:start + rows].astype(np.float32) @ gallery.T) / norms, -1.0, 1.0)
            order = np.argsort(-block, axis=1, kind="stable")[:, :k]
            indices[start:start + rows] = order
            scores[start:start + rows] = np.take_along_axis(block, order, axis=1)
        return scores, indices

    def answer(self, embeddings: np.ndarray, *, image_ids: Sequence[str], paths: Sequence[str]) -> dict[str, list]:
        """The columns of ``predictions.csv`` (``PREDICTION_COLUMNS``) of the photos with ``embeddings (Q, D)``."""
        scores, indices = self.search(embeddings)
        identities = np.asarray(self.gallery.identities, dtype=object)[indices]
        is_new = answered_new(scores[:, 0], self.open_set["open_set_threshold"])
        columns = answer_columns(
            image_ids=image_ids, paths=paths, scores=scores, identities=identities,
            valid=np.ones(scores.shape, dtype=bool), top1_gallery=[self.gallery.paths[i] for i in indices[:, 0]],
            is_new=is_new, named_right=self.open_set.get("named_right"), new_right=self.open_set.get("new_right"))
        cut = self.open_set.get("discovery_threshold")
        if cut is not None and is_new.any():
            groups = group_new_photos(embeddings[is_new], threshold=cut,
                                      k=self.open_set.get("discovery_k", DEFAULT_K),
                                      join_threshold=self.open_set.get("discovery_join_cut")).groups
            columns["proposed_identity"] = proposed_identities(columns["identity"], is_new=is_new, groups=groups)
        return columns

    def identify(self, paths: Sequence[str | Path], *, image_ids: Sequence[str] | None = None,
                 progress: bool = False) -> tuple[list[dict], list[dict]]:
        """``(rows, unreadable)``: one ``predictions.csv`` row (a dict of ``PREDICTION_COLUMNS``) per readable
        photo, in order, and ``{"row", "line", "path", "reason"}`` for each photo that cannot be read (as
        ``predict`` lists them in ``unreadable_images.csv``)."""
        image_ids = [str(p) for p in paths] if image_ids is None else list(image_ids)
        readable, unreadable = [], []
        for row, path in enumerate(paths):
            problem = check_image_file(str(Path(path).absolute()))[4]
            if problem is None:
                readable.append(row)
            else:
                unreadable.append({"row": row, "line": "", "path": str(Path(path).absolute()), "reason": problem})
        if not readable:
            raise ValueError(f"none of the {len(paths)} photos can be read: "
                             + "; ".join(f"'{u['path']}': {u['reason']}" for u in unreadable[:5]))
        kept = [str(paths[i]) for i in readable]
        columns = self.answer(self.embed(kept, progress=progress), image_ids=[image_ids[i] for i in readable],
                              paths=kept)
        rows = [dict(zip(PREDICTION_COLUMNS, values, strict=True))
                for values in zip(*(columns[name] for name in PREDICTION_COLUMNS), strict=True)]
        return rows, unreadable

    # ------------------------------------------------------------------ the gallery grows
    def add(self, paths: Sequence[str | Path], identities: Sequence[str],
            image_ids: Sequence[str] | None = None) -> int:
        """Add reviewed photos of known (or newly named) individuals to the gallery: embedded with the bundle's
        network, searched from the next answer on. Returns the gallery size. :meth:`save` writes the grown
        bundle."""
        if len(paths) != len(identities):
            raise ValueError(f"{len(paths)} paths but {len(identities)} identities")
        embeddings = self.embed([str(p) for p in paths])
        image_ids = [str(p) for p in paths] if image_ids is None else [str(i) for i in image_ids]
        self.gallery = bundle.Gallery(np.concatenate([self.gallery.embeddings, embeddings]),
                                      self.gallery.image_ids + image_ids,
                                      self.gallery.identities + [str(i) for i in identities],
                                      self.gallery.paths + [str(p) for p in paths])
        return len(self.gallery.identities)

    def save(self, output: str | Path) -> Path:
        """Write this bundle with its current gallery to a new folder ``output``, atomically (a half-written
        folder never holds a manifest)."""
        output = Path(output).expanduser()
        with bundle.staged(output) as staging:
            for name in (bundle.MODEL, bundle.OPEN_SET):
                shutil.copy2(self.folder / name, staging / name)
            bundle.write_gallery(staging, self.gallery)
            manifest = dict(self.manifest)
            manifest["gallery"] = dict(manifest["gallery"], images=len(self.gallery.identities),
                                       identities=len(set(self.gallery.identities)))
            bundle.finish(staging, manifest)
        return output
