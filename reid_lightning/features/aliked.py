"""ALIKED keypoints and descriptors (kornia's implementation, pretrained weights via :mod:`.weights`)."""

from __future__ import annotations

import os
from typing import Any

import torch
from kornia.feature import ALIKED

from .extractor import LocalFeatureExtractor, padded_features
from .weights import load_state_dict_checked, load_weights


class AlikedExtractor(LocalFeatureExtractor):
    """ALIKED features (Zhao et al., 2023): 128-d descriptors, RGB input.

    Args:
        model_name: ``"aliked-n16"``, ``"aliked-n16rot"``, ``"aliked-n32"`` or ``"aliked-t16"``.
        max_num_keypoints: keypoint budget per image.
        detection_threshold: 0 keeps the ``max_num_keypoints`` strongest maxima; a positive value keeps maxima
            above it.
        nms_radius: non-maximum suppression radius in pixels.
        batch_size: images per forward pass; None: 16 on CUDA, 1 on CPU (measured: README).
        num_workers: DataLoader workers reading the dataset.
        device: device of the network; None picks CUDA when available.
        weights: explicit checkpoint file; None resolves ``model_name`` (see
            :mod:`reid_lightning.features.weights`).
        weights_dir: folder searched for the checkpoint before the torch hub cache.
        cache_dir: disk cache of extracted features keyed by image and configuration; None disables
            it.
        progress: show a tqdm progress bar.
        memory_cache: images whose features stay in memory across calls (LRU); 0: none.
    """

    family = "aliked"
    channels = 3

    def __init__(
        self,
        model_name: str = "aliked-n16",
        max_num_keypoints: int = 256,
        detection_threshold: float = 0.0,
        nms_radius: int = 2,
        batch_size: int | None = None,
        num_workers: int = 0,
        device: str | torch.device | None = None,
        weights: str | os.PathLike | None = None,
        weights_dir: str | os.PathLike | None = None,
        cache_dir: str | os.PathLike | None = None,
        progress: bool = True,
        memory_cache: int = 1024,
    ) -> None:
        super().__init__(max_num_keypoints, batch_size, num_workers, device, cache_dir, progress, memory_cache)
        self.model_name = model_name
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        model = ALIKED(model_name, max_num_keypoints, detection_threshold, nms_radius)
        state_dict, self.weights_fingerprint = load_weights(model_name, weights, weights_dir)
        load_state_dict_checked(model, state_dict, str(weights or model_name))
        self.model = model.eval().to(self.device)

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "model_name": self.model_name,
            "detection_threshold": self.detection_threshold,
            "nms_radius": self.nms_radius,
        }

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.model(images)
        return padded_features(
            [f.keypoints for f in features],
            [f.descriptors for f in features],
            [f.keypoint_scores for f in features],
            self.max_num_keypoints,
        )
