"""LoFTR detector-free matching of image pairs (kornia's network, weights via ``features.weights``)."""

from __future__ import annotations

import copy
import os
from typing import Any

import kornia
import torch
from kornia.feature import LoFTR
from kornia.feature.loftr.loftr import default_cfg
from torch.utils.data import Dataset

from ...features.images import check_unit_range, group_by_size, item_image
from ...features.weights import load_state_dict_checked, load_weights
from ...interrupt import check
from .base import MatchPairs
from .collectors import Collector
from .matches import PairMatches

ImageFeatures = dict[str, torch.Tensor]


class MatchLOFTR(MatchPairs):
    """LoFTR (Sun et al., 2021) on image datasets directly: ``matcher(query_dataset, database_dataset)``.

    Dataset items are float ``(C, H, W)`` images in [0, 1] (RGB is converted to gray). The backbone runs once
    per image and its feature maps are kept for all pairs of that image (about 6.5 MB per 224 x 224 image).

    Args:
        pretrained: ``"outdoor"``, ``"indoor"`` or ``"indoor_new"`` weights.
        collector: turns matches into scores; defaults to ``CollectCounts(thresholds=(0.5,))``.
        batch_size: pairs per forward pass.
        device: device of the matcher; None picks CUDA when available.
        weights: explicit checkpoint (``{"state_dict": ...}``); None resolves ``loftr_<pretrained>``.
        weights_dir: folder searched for the checkpoint before the torch hub cache.
        init_threshold: coarse matching threshold; matches at or below it are dropped before the collector.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        pretrained: str = "outdoor",
        collector: Collector | None = None,
        batch_size: int = 16,
        device: str | torch.device | None = None,
        weights: str | os.PathLike | None = None,
        weights_dir: str | os.PathLike | None = None,
        init_threshold: float = 0.2,
        progress: bool = True,
    ) -> None:
        super().__init__(collector, batch_size, device, progress)
        if pretrained not in ("outdoor", "indoor", "indoor_new"):
            raise ValueError(f"pretrained must be 'outdoor', 'indoor' or 'indoor_new', got {pretrained!r}.")
        self.pretrained = pretrained
        self.init_threshold = init_threshold
        config = copy.deepcopy(default_cfg)
        config["match_coarse"]["thr"] = init_threshold
        config["coarse"]["temp_bug_fix"] = pretrained == "indoor_new"
        model = LoFTR(pretrained=None, config=config)
        checkpoint, self.weights_fingerprint = load_weights(f"loftr_{pretrained}", weights, weights_dir)
        source = str(weights or f"loftr_{pretrained}")
        if "state_dict" not in checkpoint:
            raise ValueError(
                f"LoFTR weights {source!r} lack the 'state_dict' entry of the official checkpoint format."
            )
        load_state_dict_checked(model, dict(checkpoint["state_dict"]), source)
        self.model = model.eval().to(self.device)

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "pretrained": self.pretrained, "init_threshold": self.init_threshold, "weights": self.weights_fingerprint
        }

    def _backbone(self, dataset: Dataset, indices: list[int]) -> dict[int, ImageFeatures]:
        images = []
        for index in indices:
            image = item_image(dataset[index], index)
            check_unit_range(image, index)
            images.append(image)
        features: dict[int, ImageFeatures] = {}
        for positions in group_by_size(images).values():
            for chunk in torch.tensor(positions).split(self.batch_size):
                check()  # SIGTERM/SIGINT stop the backbone pass between batches (reid_lightning.interrupt)
                batch = torch.stack([images[p] for p in chunk]).to(self.device, torch.float32)
                gray = kornia.color.rgb_to_grayscale(batch) if batch.shape[1] == 3 else batch
                with torch.inference_mode():
                    maps = self.model.extract_features(gray)
                for i, position in enumerate(chunk.tolist()):
                    features[indices[position]] = {name: value[i : i + 1] for name, value in maps.items()}
        return features

    def prepare(
        self, query: Dataset, database: Dataset, pairs: torch.Tensor
    ) -> tuple[dict[int, ImageFeatures], dict[int, ImageFeatures]]:
        return (
            self._backbone(query, pairs[:, 0].unique().tolist()),
            self._backbone(database, pairs[:, 1].unique().tolist()),
        )

    def match(
        self, prepared: tuple[dict[int, ImageFeatures], dict[int, ImageFeatures]], pairs: torch.Tensor
    ) -> PairMatches:
        query, database = prepared
        groups: dict[tuple, list[int]] = {}
        for position, (i, j) in enumerate(pairs.tolist()):
            key = (tuple(query[i]["coarse"].shape), tuple(database[j]["coarse"].shape))
            groups.setdefault(key, []).append(position)
        flat: dict[str, list[torch.Tensor]] = {
            "pair": [],
            "confidence": [],
            "keypoints0": [],
            "keypoints1": [],
        }
        for positions in groups.values():
            rows = pairs[positions].tolist()
            features0 = {name: torch.cat([query[i][name] for i, _ in rows]) for name in ("coarse", "fine")}
            features1 = {name: torch.cat([database[j][name] for _, j in rows]) for name in ("coarse", "fine")}
            out = self.model({"features0": features0, "features1": features1})
            flat["pair"].append(torch.tensor(positions, device=self.device)[out["batch_indexes"].long()])
            flat["confidence"].append(out["confidence"])
            flat["keypoints0"].append(out["keypoints0"])
            flat["keypoints1"].append(out["keypoints1"])
        return PairMatches.from_flat(
            torch.cat(flat["pair"]),
            torch.cat(flat["confidence"]),
            torch.cat(flat["keypoints0"]),
            torch.cat(flat["keypoints1"]),
            num_pairs=len(pairs),
        )
