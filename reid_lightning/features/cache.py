"""Cache of per-image local features: an in-memory LRU over an atomic disk store, keyed by image and
extractor configuration."""

from __future__ import annotations

import hashlib
import os
import pickle
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

from .images import iterate_images

CACHE_ENV_VAR = "REID_LIGHTNING_CACHE"


def default_cache_dir() -> Path:
    """The per-user feature cache: ``$REID_LIGHTNING_CACHE``, else ``$XDG_CACHE_HOME`` (or ``~/.cache``) +
    ``reid_lightning/features``."""
    if os.environ.get(CACHE_ENV_VAR):
        return Path(os.environ[CACHE_ENV_VAR]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "reid_lightning" / "features"


def image_hash(image: torch.Tensor) -> str:
    """SHA-256 of an image tensor's shape, dtype and values."""
    image = image.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(image.shape)}|{image.dtype}|".encode())
    digest.update(image.view(torch.uint8).numpy().tobytes() if image.numel() else b"")
    return digest.hexdigest()


def _deterministic_repr(transform: Any) -> str | None:
    """``repr(transform)`` when it names the transform's settings; None for lambdas, bound objects without a
    repr, and random augmentations, whose output a file identity does not determine."""
    text = repr(transform)
    return None if " at 0x" in text or "Random" in text else text


def file_keys(dataset: Any) -> list[str] | None:
    """Cache keys from each image's file identity (path, size, modification time), its metadata row and the
    dataset's transform, so a warm cache never decodes an image; None when ``dataset`` does not expose
    ``image_path`` and ``metadata`` (as ``ImageDataset`` does) or its transform is not deterministic."""
    if not (hasattr(dataset, "image_path") and hasattr(dataset, "metadata")):
        return None
    transform = _deterministic_repr(getattr(dataset, "transform", None))
    if transform is None:
        return None
    # the row holds what loading depends on besides the file (e.g. a bounding box); the label does not matter
    rows = dataset.metadata.drop(columns=[getattr(dataset, "col_label", None)], errors="ignore")
    prefix = f"{type(dataset).__qualname__}|{getattr(dataset, 'img_load', '')}|{transform}"
    keys = []
    for index, row in enumerate(rows.itertuples(index=False)):
        path = Path(dataset.image_path(index)).resolve()
        stat = path.stat()
        identity = f"{prefix}|{path}|{stat.st_size}|{stat.st_mtime_ns}|{tuple(row)}"
        keys.append("file-" + hashlib.sha256(identity.encode()).hexdigest())
    return keys


def image_keys(dataset: Any, progress: bool = True) -> list[str]:
    """One cache key per image of ``dataset``: :func:`file_keys` where the dataset allows (no image read),
    otherwise the hash of each decoded image (:func:`image_hash`)."""
    keys = file_keys(dataset)
    if keys is not None:
        return keys
    return [image_hash(image) for _, images in iterate_images(dataset, 1, 0, "Hashing images", progress)
            for image in images]


class FeatureCache:
    """One file per (configuration, image key) under ``root``, with the last ``memory_items`` entries in memory.

    Args:
        root: cache folder, created on first write; None keeps the in-memory LRU only.
        config_key: the extractor's :attr:`config_key`; a different configuration or weights never hits.
        memory_items: entries kept in memory (least recently used first out); 0 disables the memory level.
    """

    def __init__(self, root: str | os.PathLike | None, config_key: str, memory_items: int = 1024) -> None:
        self.folder = None if root is None else Path(root) / hashlib.sha256(config_key.encode()).hexdigest()[:20]
        self.config_key = config_key
        self.memory_items = memory_items
        self._memory: OrderedDict[str, dict[str, torch.Tensor]] = OrderedDict()

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def _remember(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        if self.memory_items > 0:
            self._memory[key] = tensors
            self._memory.move_to_end(key)
            while len(self._memory) > self.memory_items:
                self._memory.popitem(last=False)

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The stored entry for image key ``key``, or None (callers must not modify the returned tensors)."""
        if key in self._memory:
            self._memory.move_to_end(key)
            return self._memory[key]
        if self.folder is None or not (path := self._path(key)).is_file():
            return None
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except (EOFError, OSError, RuntimeError, pickle.UnpicklingError):  # e.g. truncated by a full disk: extract again
            return None
        # The folder name is a hash prefix; the stored key rules out a collision between configurations.
        if entry.get("config_key") != self.config_key:
            return None
        self._remember(key, entry["tensors"])
        return entry["tensors"]

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store ``tensors`` for image key ``key``; on disk atomically: a reader, or another process writing the
        same key, never sees a partial file."""
        self._remember(key, tensors)
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        # a unique temporary name per writer (process or thread), renamed over the entry in one step
        handle, partial = tempfile.mkstemp(dir=self.folder, prefix=f".{key}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "wb") as file:
                torch.save({"config_key": self.config_key, "tensors": tensors}, file)
            os.replace(partial, self._path(key))
        except BaseException:
            Path(partial).unlink(missing_ok=True)
            raise
