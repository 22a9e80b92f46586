"""Gallery embeddings kept on disk between ``predict`` runs, keyed by everything that changes them."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from ..data.dataset import ImageDataset
from ..rundir import new_temp_file

METADATA_COLUMNS = ("image_id", "identity", "path", "bbox")


def gallery_cache_key(model: nn.Module, gallery: ImageDataset) -> str:
    """SHA-256 (hex) of the model's weights and buffers, the gallery's transform and root, and its metadata
    (image_id, identity, path, bbox); any change of one of them gives another key."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                      if tensor.numel() else b"")
    digest.update(repr(gallery.transform).encode())
    digest.update(f"{gallery.root}|{gallery.img_load}".encode())
    columns = [c for c in METADATA_COLUMNS if c in gallery.metadata.columns]
    digest.update(gallery.metadata[columns].astype(str).to_csv(index=False).encode())
    return digest.hexdigest()


class GalleryCache:
    """Folder of ``<key>.safetensors`` files, each holding the ``(G, D)`` embeddings of one gallery."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder).expanduser()

    def path(self, key: str) -> Path:
        return self.folder / f"gallery-{key}.safetensors"

    def load(self, key: str, num_images: int) -> Tensor | None:
        """The cached ``(num_images, D)`` embeddings of ``key``, or None when absent (or of another size)."""
        path = self.path(key)
        if not path.is_file():
            return None
        embeddings = load_file(path)["embeddings"]
        return embeddings if len(embeddings) == num_images else None

    def save(self, key: str, embeddings: Tensor) -> Path:
        """Write atomically (a concurrent reader sees the old file or the whole new one)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle, temp = new_temp_file(self.folder, prefix=".gallery-")
        mode = os.fstat(handle).st_mode & 0o7777
        os.close(handle)
        try:
            save_file({"embeddings": embeddings.detach().cpu().contiguous()}, temp)
            os.chmod(temp, mode)  # save_file writes a file of its own (0600): give it a new file's usual mode
            os.replace(temp, self.path(key))
        finally:
            if os.path.exists(temp):
                os.unlink(temp)
        return self.path(key)
