"""DISK keypoints and descriptors (kornia's implementation, pretrained weights via :mod:`.weights`)."""

from __future__ import annotations

import os
from typing import Any

import torch
from kornia.feature import DISK

from .extractor import LocalFeatureExtractor, padded_features
from .weights import load_state_dict_checked, load_weights


class DiskExtractor(LocalFeatureExtractor):
    """DISK features (Tyszkiewicz et al., 2020): 128-d descriptors, RGB input.

    Args:
        checkpoint: ``"depth"`` or ``"epipolar"`` pretrained weights.
        max_num_keypoints: keypoint budget per image.
        detection_threshold: heatmap value a keypoint must exceed.
        nms_window_size: non-maximum suppression window in pixels.
        batch_size: images per forward pass; None: 16 on CUDA, 1 on CPU (measured: README).
        num_workers: DataLoader workers reading the dataset.
        device: device of the network; None picks CUDA when available.
        weights: explicit checkpoint file (``{"extractor": state_dict}``); None resolves
            ``disk-<checkpoint>``.
        weights_dir: folder searched for the checkpoint before the torch hub cache.
        cache_dir: disk cache of extracted features keyed by image and configuration; None disables
            it.
        progress: show a tqdm progress bar.
        memory_cache: images whose features stay in memory across calls (LRU); 0: none.
    """

    family = "disk"
    channels = 3

    def __init__(
        self,
        checkpoint: str = "depth",
        max_num_keypoints: int = 256,
        detection_threshold: float = 0.0,
        nms_window_size: int = 5,
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
        if checkpoint not in ("depth", "epipolar"):
            raise ValueError(f"checkpoint must be 'depth' or 'epipolar', got {checkpoint!r}.")
        self.checkpoint = checkpoint
        self.detection_threshold = detection_threshold
        self.nms_window_size = nms_window_size
        model = DISK()
        state, self.weights_fingerprint = load_weights(f"disk-{checkpoint}", weights, weights_dir)
        source = str(weights or f"disk-{checkpoint}")
        if "extractor" not in state:
            raise ValueError(
                f"DISK weights {source!r} lack the 'extractor' entry of the official checkpoint format."
            )
        load_state_dict_checked(model, state["extractor"], source)
        self.model = model.eval().to(self.device)

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "checkpoint": self.checkpoint,
            "detection_threshold": self.detection_threshold,
            "nms_window_size": self.nms_window_size,
        }

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.model(
            images,
            n=self.max_num_keypoints,
            window_size=self.nms_window_size,
            score_threshold=self.detection_threshold,
            pad_if_not_divisible=True,
        )
        return padded_features(
            [f.keypoints for f in features],
            [f.descriptors for f in features],
            [f.detection_scores for f in features],
            self.max_num_keypoints,
        )
