"""SIFT keypoints and RootSIFT descriptors (kornia, no weights needed)."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from kornia.feature import (
    SIFTFeatureScaleSpace,
    get_laf_center,
    get_laf_orientation,
    get_laf_scale,
    laf_is_filled,
)

from .extractor import LocalFeatureExtractor


class SiftExtractor(LocalFeatureExtractor):
    """DoG scale-space SIFT (kornia ``SIFTFeatureScaleSpace``) on gray images, descriptors in OpenCV's layout.

    ``scales`` hold the detection sigma and ``orientations`` the COLMAP angle in radians, the keypoint
    convention LightGlue's ``"sift"`` weights were trained with.

    Args:
        max_num_keypoints: keypoint budget per image.
        upright: skip orientation estimation (all orientations 0).
        rootsift: RootSIFT (Hellinger-normalised) descriptors instead of plain SIFT.
        descriptor_backend: kornia's ``"pyramid"`` (fast) or ``"patch"`` descriptor implementation.
        batch_size: images per forward pass; None: :attr:`default_batch_sizes` (16 on CUDA, 1 on CPU).
        num_workers: DataLoader workers reading the dataset.
        device: device of the computation; None picks CUDA when available.
        cache_dir: disk cache of extracted features keyed by image and configuration; None disables
            it.
        progress: show a tqdm progress bar.
        memory_cache: images whose features stay in memory across calls (LRU); 0: none.
    """

    family = "sift"
    channels = 1

    def __init__(
        self,
        max_num_keypoints: int = 256,
        upright: bool = False,
        rootsift: bool = True,
        descriptor_backend: str = "pyramid",
        batch_size: int | None = None,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        memory_cache: int = 1024,
    ) -> None:
        super().__init__(max_num_keypoints, batch_size, num_workers, device, cache_dir, progress, memory_cache)
        self.upright = upright
        self.rootsift = rootsift
        self.descriptor_backend = descriptor_backend
        self.model = SIFTFeatureScaleSpace(
            max_num_keypoints,
            upright=upright,
            rootsift=rootsift,
            device=self.device,
            descriptor_backend=descriptor_backend,
            descriptor_layout="opencv",
        ).eval()

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "upright": self.upright,
            "rootsift": self.rootsift,
            "descriptor_backend": self.descriptor_backend,
        }

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        lafs, responses, descriptors = self.model(images)
        # kornia fills the slots best-first; the unfilled ones, at the end, share a dummy frame
        mask = laf_is_filled(lafs)
        # COLMAP keypoints, as LightGlue's SIFT weights take them: the scale is sigma (a LAF spans 6 sigma)
        # and the angle is the negated LAF orientation, in (-pi, pi]
        orientations = -torch.deg2rad(get_laf_orientation(lafs)[..., 0])
        orientations = torch.where(orientations <= -math.pi, orientations + 2 * math.pi, orientations)
        rows = {
            "keypoints": get_laf_center(lafs),
            "descriptors": descriptors,
            "scores": responses,
            "scales": get_laf_scale(lafs)[..., 0, 0] / 6.0,
            "orientations": orientations,
        }
        padding = ~mask
        return {
            name: value.masked_fill(padding.view(*mask.shape, *[1] * (value.ndim - 2)), 0.0)
            for name, value in rows.items()
        } | {"mask": mask}
