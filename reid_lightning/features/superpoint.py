"""SuperPoint (DeTone et al., 2018): network in the layout of ``superpoint_v1.pth``, and its extractor."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .extractor import LocalFeatureExtractor
from .weights import load_state_dict_checked, load_weights

CELL = 8  # the encoder downsamples by 8; the detector head predicts one of 64 pixels (or none) per 8x8 cell


class SuperPointNet(nn.Module):
    """VGG-style shared encoder, detector head (65 logits per cell) and descriptor head.

    Parameter names (``conv1a`` ... ``convDb``) are those of the official checkpoint.

    Args:
        descriptor_dim: descriptor channels (256 in the official weights).
    """

    def __init__(self, descriptor_dim: int = 256) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = 64, 64, 128, 128, 256
        self.conv1a = nn.Conv2d(1, c1, 3, padding=1)
        self.conv1b = nn.Conv2d(c1, c1, 3, padding=1)
        self.conv2a = nn.Conv2d(c1, c2, 3, padding=1)
        self.conv2b = nn.Conv2d(c2, c2, 3, padding=1)
        self.conv3a = nn.Conv2d(c2, c3, 3, padding=1)
        self.conv3b = nn.Conv2d(c3, c3, 3, padding=1)
        self.conv4a = nn.Conv2d(c3, c4, 3, padding=1)
        self.conv4b = nn.Conv2d(c4, c4, 3, padding=1)
        self.convPa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convPb = nn.Conv2d(c5, CELL * CELL + 1, 1)
        self.convDa = nn.Conv2d(c4, c5, 3, padding=1)
        self.convDb = nn.Conv2d(c5, descriptor_dim, 1)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Dense outputs for ``image (B, 1, H, W)``, H and W multiples of 8.

        Returns ``heatmap (B, H, W)`` (keypoint probability per pixel) and ``descriptors (B, D, H/8, W/8)``.
        """
        x = image
        blocks = [(self.conv1a, self.conv1b), (self.conv2a, self.conv2b), (self.conv3a, self.conv3b)]
        for conv_a, conv_b in blocks:
            x = F.max_pool2d(F.relu(conv_b(F.relu(conv_a(x)))), 2)
        x = F.relu(self.conv4b(F.relu(self.conv4a(x))))
        cell_probabilities = self.convPb(F.relu(self.convPa(x))).softmax(dim=1)[
            :, :-1
        ]  # drop the "no point" bin
        heatmap = F.pixel_shuffle(cell_probabilities, CELL)[:, 0]
        descriptors = F.normalize(self.convDb(F.relu(self.convDa(x))), dim=1)
        return heatmap, descriptors


def sample_descriptors(dense: torch.Tensor, keypoints: torch.Tensor) -> torch.Tensor:
    """Normalised bilinear descriptors ``(B, K, D)`` at ``keypoints (B, K, 2)`` from ``dense (B, D, h, w)``.

    Uses the reference implementation's mapping from pixels to cells, which LightGlue's SuperPoint weights
    expect.
    """
    _, _, h, w = dense.shape
    scale = keypoints.new_tensor([w * CELL - CELL / 2 - 0.5, h * CELL - CELL / 2 - 0.5])
    grid = (keypoints - CELL / 2 + 0.5) / scale * 2 - 1
    sampled = F.grid_sample(dense, grid[:, None], mode="bilinear", align_corners=True)[:, :, 0]
    return F.normalize(sampled.transpose(1, 2), dim=-1)


class SuperPointExtractor(LocalFeatureExtractor):
    """SuperPoint features: 256-d descriptors, grayscale input.

    Args:
        max_num_keypoints: keypoint budget per image (the strongest local maxima are kept).
        detection_threshold: heatmap probability a keypoint must exceed.
        nms_radius: non-maximum suppression radius in pixels.
        remove_borders: keypoints closer than this to the image border are dropped.
        batch_size: images per forward pass; None: :attr:`default_batch_sizes` (16 on CUDA, 1 on CPU).
        num_workers: DataLoader workers reading the dataset.
        device: device of the network; None picks CUDA when available.
        weights: explicit checkpoint in the official format (``conv1a.weight`` ... ``convDb.bias``).
        weights_dir: folder searched for ``superpoint_v1.pth`` before the torch hub cache.
        cache_dir: disk cache of extracted features keyed by image and configuration; None disables
            it.
        progress: show a tqdm progress bar.
        memory_cache: images whose features stay in memory across calls (LRU); 0: none.
    """

    family = "superpoint"
    channels = 1

    def __init__(
        self,
        max_num_keypoints: int = 256,
        detection_threshold: float = 0.0,
        nms_radius: int = 4,
        remove_borders: int = 4,
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
        self.detection_threshold = detection_threshold
        self.nms_radius = nms_radius
        self.remove_borders = remove_borders
        model = SuperPointNet()
        state_dict, self.weights_fingerprint = load_weights("superpoint_v1", weights, weights_dir)
        load_state_dict_checked(model, state_dict, str(weights or "superpoint_v1"))
        self.model = model.eval().to(self.device)

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "detection_threshold": self.detection_threshold,
            "nms_radius": self.nms_radius,
            "remove_borders": self.remove_borders,
        }

    def detect(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        height, width = images.shape[-2:]
        padded = F.pad(images, (0, -width % CELL, 0, -height % CELL))
        heatmap, dense = self.model(padded)
        heatmap = heatmap[:, :height, :width]
        window = 2 * self.nms_radius + 1
        is_max = heatmap == F.max_pool2d(heatmap[:, None], window, stride=1, padding=self.nms_radius)[:, 0]
        border = self.remove_borders
        inside = torch.zeros_like(is_max)
        inside[:, border : height - border, border : width - border] = True
        candidates = heatmap.masked_fill(
            ~(is_max & inside & (heatmap > self.detection_threshold)), -torch.inf
        )
        top = candidates.flatten(1).topk(min(self.max_num_keypoints, height * width), dim=1)
        mask = torch.isfinite(top.values)
        keypoints = torch.stack([top.indices % width, top.indices // width], dim=-1).float()
        descriptors = sample_descriptors(dense, keypoints)
        pad = self.max_num_keypoints - mask.shape[1]
        rows = {
            "keypoints": keypoints * mask[..., None],
            "descriptors": descriptors * mask[..., None],
            "scores": top.values.masked_fill(~mask, 0.0),
            "mask": mask,
        }
        return {
            name: F.pad(value, (0, 0, 0, pad) if value.ndim == 3 else (0, pad))
            for name, value in rows.items()
        }
