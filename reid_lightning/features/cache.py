"""Disk cache of per-image local features, keyed by image content and extractor configuration."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch


def image_hash(image: torch.Tensor) -> str:
    """SHA-256 of an image tensor's shape, dtype and values."""
    image = image.detach().cpu().contiguous()
    digest = hashlib.sha256(f"{tuple(image.shape)}|{image.dtype}|".encode())
    digest.update(image.view(torch.uint8).numpy().tobytes() if image.numel() else b"")
    return digest.hexdigest()


class FeatureCache:
    """One file per (configuration, image content) under ``root``.

    Args:
        root: cache folder, created on first write.
        config_key: the extractor's :attr:`config_key`; a different configuration or weights never hits.
    """

    def __init__(self, root: str | os.PathLike, config_key: str) -> None:
        self.folder = Path(root) / hashlib.sha256(config_key.encode()).hexdigest()[:20]
        self.config_key = config_key

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.pt"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The stored entry for image hash ``key``, or None."""
        path = self._path(key)
        if not path.is_file():
            return None
        entry = torch.load(path, map_location="cpu", weights_only=True)
        # The folder name is a hash prefix; the stored key rules out a collision between configurations.
        return entry["tensors"] if entry.get("config_key") == self.config_key else None

    def put(self, key: str, tensors: dict[str, torch.Tensor]) -> None:
        """Store ``tensors`` for image hash ``key`` (atomically: a reader never sees a partial file)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(key)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        torch.save({"config_key": self.config_key, "tensors": tensors}, partial)
        os.replace(partial, path)
