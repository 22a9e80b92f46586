"""Batched local features: a fixed keypoint budget per image, padded and masked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import torch


@dataclass(frozen=True, repr=False)
class LocalFeatures:
    """Keypoints and descriptors of ``N`` images, padded to ``K`` keypoints each.

    Args:
        keypoints: ``(N, K, 2)`` float32 ``(x, y)`` pixel coordinates (pixel centres at integers); zero where
            padded.
        descriptors: ``(N, K, D)`` float32; zero where padded.
        scores: ``(N, K)`` float32 detection scores; zero where padded.
        mask: ``(N, K)`` bool, True for a detected keypoint, False for padding; detected keypoints come first.
        image_sizes: ``(N, 2)`` long ``(width, height)`` of the image the keypoints were detected on.
        extractor: the extractor's family (``"aliked"``, ``"disk"``, ``"sift"``, ``"superpoint"``).
        config_key: identifies extractor, configuration and weights; features are comparable only with equal
            keys.
        scales: ``(N, K)`` keypoint scales (SIFT: the detection sigma in pixels), or None.
        orientations: ``(N, K)`` keypoint orientations in radians (SIFT: COLMAP convention), or None.
    """

    keypoints: torch.Tensor
    descriptors: torch.Tensor
    scores: torch.Tensor
    mask: torch.Tensor
    image_sizes: torch.Tensor
    extractor: str
    config_key: str
    scales: torch.Tensor | None = None
    orientations: torch.Tensor | None = None

    def __post_init__(self) -> None:
        n, k = self.mask.shape
        for name, value in self._tensors().items():
            if value.shape[:2] != (n, k) and name != "image_sizes":
                raise ValueError(
                    f"LocalFeatures.{name} has shape {tuple(value.shape)}, expected ({n}, {k}, ...)."
                )
        if self.image_sizes.shape != (n, 2):
            raise ValueError(
                f"LocalFeatures.image_sizes has shape {tuple(self.image_sizes.shape)}, expected ({n}, 2)."
            )
        if (self.mask[:, 1:] & ~self.mask[:, :-1]).any():
            raise ValueError(
                "LocalFeatures.mask must list the detected keypoints first and the padding last."
            )

    def __repr__(self) -> str:
        n, k, dim = self.descriptors.shape
        return (
            f"LocalFeatures(images={n}, max_keypoints={k}, descriptor_dim={dim}, "
            f"mean_keypoints={self.mask.float().sum(1).mean():.1f}, config_key={self.config_key!r})"
        )

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if isinstance(getattr(self, f.name), torch.Tensor)
        }

    def __len__(self) -> int:
        return self.mask.shape[0]

    @property
    def num_keypoints(self) -> torch.Tensor:
        """``(N,)`` number of detected keypoints per image."""
        return self.mask.sum(dim=1)

    def __getitem__(self, index: int | slice | Sequence[int] | torch.Tensor) -> LocalFeatures:
        """Rows ``index`` as a new :class:`LocalFeatures` (an int keeps the batch dimension)."""
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        elif not isinstance(index, slice):
            index = torch.as_tensor(index, dtype=torch.long)
        return replace(self, **{name: value[index] for name, value in self._tensors().items()})

    def to(self, device: torch.device | str) -> LocalFeatures:
        """A copy on ``device``."""
        return replace(self, **{name: value.to(device) for name, value in self._tensors().items()})

    @classmethod
    def cat(cls, parts: Sequence[LocalFeatures]) -> LocalFeatures:
        """Concatenate along the image dimension; all parts must share one extractor configuration."""
        if not parts:
            raise ValueError("LocalFeatures.cat needs at least one part.")
        keys = {part.config_key for part in parts}
        if len(keys) > 1:
            raise ValueError(
                f"Cannot concatenate features of different extractor configurations: {sorted(keys)}."
            )
        first = parts[0]
        tensors = {name: torch.cat([p._tensors()[name] for p in parts]) for name in first._tensors()}
        return replace(first, **tensors)
