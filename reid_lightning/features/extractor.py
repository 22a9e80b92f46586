"""Base class of the local feature extractors: dataset in, :class:`LocalFeatures` out."""

from __future__ import annotations

import os
from typing import Any, ClassVar

import kornia
import torch
from torch.utils.data import Dataset, Subset

from ..interrupt import interruptible
from .cache import FeatureCache, file_keys, image_hash
from .images import check_unit_range, group_by_size, iterate_images
from .local_features import LocalFeatures


def default_device(device: str | torch.device | None) -> torch.device:
    """``device``, or CUDA when available and CPU otherwise."""
    return torch.device(device if device is not None else ("cuda" if torch.cuda.is_available() else "cpu"))


def pad_keypoint_rows(rows: list[torch.Tensor], length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack per-image ``(n_i, ...)`` tensors, zero-padded, into ``(B, length, ...)`` and a mask."""
    out = rows[0].new_zeros((len(rows), length, *rows[0].shape[1:]))
    mask = torch.zeros(len(rows), length, dtype=torch.bool, device=rows[0].device)
    for i, row in enumerate(rows):
        n = min(len(row), length)
        out[i, :n] = row[:n]
        mask[i, :n] = True
    return out, mask


def padded_features(
    keypoints: list[torch.Tensor], descriptors: list[torch.Tensor], scores: list[torch.Tensor], length: int
) -> dict[str, torch.Tensor]:
    """The output of :meth:`LocalFeatureExtractor.detect` from per-image lists of variable length."""
    padded_keypoints, mask = pad_keypoint_rows(keypoints, length)
    return {
        "keypoints": padded_keypoints,
        "descriptors": pad_keypoint_rows(descriptors, length)[0],
        "scores": pad_keypoint_rows(scores, length)[0],
        "mask": mask,
    }


class LocalFeatureExtractor:
    """Detects and describes at most ``max_num_keypoints`` keypoints per image of a dataset.

    Subclasses set :attr:`family` and :attr:`channels` and implement :meth:`detect`. Calling the extractor on
    a dataset (items ``image`` or ``(image, label)``, float ``(C, H, W)`` in [0, 1]) returns
    :class:`LocalFeatures` on the CPU, in dataset order. Images of different sizes are batched per size.

    Args:
        max_num_keypoints: keypoint budget ``K`` per image; images with fewer keypoints are padded and masked.
        batch_size: images per forward pass; None: :attr:`default_batch_sizes` (16 on CUDA, 1 on CPU).
        num_workers: DataLoader workers reading the dataset.
        device: device of the network; None picks CUDA when available.
        cache_dir: folder of a disk cache keyed by image and :attr:`config_key`; None: no disk cache.
        memory_cache: images whose features stay in memory across calls (an LRU over the disk cache); 0: none.
        progress: show a tqdm progress bar.

    Cache keys are cheap where the dataset allows (``ImageDataset``: file identity + metadata row + transform,
    see :func:`file_keys`; a warm cache then reads no image) and the decoded image's content otherwise.
    """

    family: ClassVar[str]
    channels: ClassVar[int]
    #: images per forward pass when ``batch_size`` is None, by device type. On a 2-core CPU the networks are
    #: compute-bound: no batch size of 2-8 was consistently faster than one image at 256 or 512 px, and larger
    #: batches hold more memory (README, "Extraction batch sizes"); CUDA batches amortise kernel launches.
    default_batch_sizes: ClassVar[dict[str, int]] = {"cpu": 1, "cuda": 16}

    def __init__(
        self,
        max_num_keypoints: int = 256,
        batch_size: int | None = None,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        memory_cache: int = 1024,
    ) -> None:
        if max_num_keypoints < 1:
            raise ValueError(f"max_num_keypoints must be positive, got {max_num_keypoints}.")
        self.device = default_device(device)
        if batch_size is None:
            batch_size = self.default_batch_sizes.get(self.device.type, 1)
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.max_num_keypoints = max_num_keypoints
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.cache_dir = cache_dir
        self.progress = progress
        self.memory_cache = memory_cache
        self._caches: dict[tuple[str | None, str], FeatureCache] = {}
        self.weights_fingerprint = "none"

    @property
    def display_name(self) -> str:
        """The extractor in progress bars, e.g. ``ALIKED`` (bars read ``<phase>: ALIKED features``)."""
        return {"superpoint": "SuperPoint"}.get(self.family, self.family.upper())

    def config(self) -> dict[str, Any]:
        """Everything that changes the output besides the image and the weights."""
        return {"max_num_keypoints": self.max_num_keypoints}

    @property
    def config_key(self) -> str:
        """Extractor, configuration and weights, e.g. ``aliked|max_num_keypoints=256|...|weights=ab12``."""
        parts = [f"{key}={value}" for key, value in sorted(self.config().items())]
        return "|".join([self.family, *parts, f"weights={self.weights_fingerprint}"])

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Features of a batch ``(B, channels, H, W)`` on :attr:`device`.

        Returns ``keypoints (B, K, 2)``, ``descriptors (B, K, D)``, ``scores (B, K)``, ``mask (B, K)`` and
        optionally ``scales``/``orientations (B, K)``, with ``K = max_num_keypoints``.
        """
        raise NotImplementedError

    def _to_channels(self, images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == self.channels:
            return images
        if self.channels == 1:
            return kornia.color.rgb_to_grayscale(images)
        return images.expand(-1, 3, -1, -1)

    def _extract_batch(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        rows: list[dict[str, torch.Tensor]] = [{} for _ in images]
        for positions in group_by_size(images).values():
            batch = torch.stack([images[p] for p in positions]).to(self.device, torch.float32)
            with torch.inference_mode():
                out = self.detect(self._to_channels(batch))
            for i, position in enumerate(positions):
                rows[position] = {
                    name: (value[i].float() if value.is_floating_point() else value[i]).cpu()
                    for name, value in out.items()
                }
                rows[position]["image_sizes"] = torch.tensor([batch.shape[-1], batch.shape[-2]])
        return rows

    def _cache(self, cache_dir: str | os.PathLike | None) -> FeatureCache | None:
        """The cache of ``cache_dir`` and the current configuration, kept so its memory level lasts."""
        if cache_dir is None and self.memory_cache <= 0:
            return None
        where = (None if cache_dir is None else str(cache_dir), self.config_key)
        if where not in self._caches:
            self._caches[where] = FeatureCache(cache_dir, self.config_key, self.memory_cache)
        return self._caches[where]

    def _extract_rows(
        self, dataset: Dataset, cache: FeatureCache | None, keys: list[str] | None
    ) -> list[dict[str, torch.Tensor]]:
        """Features of every image of ``dataset``; with ``keys`` (one per image) they key the cache, otherwise
        the decoded image's content does."""
        rows: list[dict[str, torch.Tensor]] = []
        # SIGTERM/SIGINT stop it between batches (iterate_images checks before reading the next one): every
        # cache file is complete, so a later run extracts only the images this one did not reach
        with interruptible(f"{self.display_name} features") as title:
            for start, images in iterate_images(dataset, self.batch_size, self.num_workers, title, self.progress):
                for offset, image in enumerate(images):
                    check_unit_range(image, start + offset)
                if cache is None:
                    rows.extend(self._extract_batch(images))
                    continue
                batch_keys = keys[start : start + len(images)] if keys else [image_hash(image) for image in images]
                batch_rows = [cache.get(key) for key in batch_keys]
                missing = [i for i, row in enumerate(batch_rows) if row is None]
                if missing:
                    for i, row in zip(missing, self._extract_batch([images[i] for i in missing]), strict=True):
                        batch_rows[i] = row
                        cache.put(batch_keys[i], row)
                rows.extend(batch_rows)
        return rows

    def __call__(
        self, dataset: Dataset, cache_dir: str | os.PathLike | None = None, keys: list[str] | None = None
    ) -> LocalFeatures:
        """Features of every image of ``dataset``: :class:`LocalFeatures` with ``N = len(dataset)``.

        ``cache_dir`` replaces :attr:`cache_dir` for this call (e.g. a caller's default cache folder);
        ``keys`` are the images' cache keys when the caller has them already (see :func:`.cache.image_keys`).
        """
        cache = self._cache(cache_dir if cache_dir is not None else self.cache_dir)
        if cache is None:
            keys = None
        elif keys is None:
            keys = file_keys(dataset)
        elif len(keys) != len(dataset):
            raise ValueError(f"{type(self).__name__} got {len(keys)} cache keys for {len(dataset)} images.")
        if keys is None:
            rows = self._extract_rows(dataset, cache, None)
        else:
            # look every image up before reading any: a warm cache decodes nothing
            rows = [cache.get(key) for key in keys]
            missing = [i for i, row in enumerate(rows) if row is None]
            if missing:
                extracted = self._extract_rows(Subset(dataset, missing), cache, [keys[i] for i in missing])
                for i, row in zip(missing, extracted, strict=True):
                    rows[i] = row
        if not rows:
            raise ValueError(f"{type(self).__name__} got an empty dataset.")
        tensors = {name: torch.stack([row[name] for row in rows]) for name in rows[0]}
        return LocalFeatures(**tensors, extractor=self.family, config_key=self.config_key)
