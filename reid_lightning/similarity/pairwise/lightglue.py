"""LightGlue matching of extracted local features (kornia's network, weights via ``features.weights``)."""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
from kornia.feature import LightGlue
from kornia.feature.lightglue import normalize_keypoints

from ...features.extractor import default_device
from ...features.local_features import LocalFeatures
from ...features.weights import load_state_dict_checked, load_weights, rename_lightglue_keys
from .base import MatchPairs
from .collectors import Collector
from .matches import PairMatches

FEATURES = ("aliked", "disk", "sift", "superpoint")


def lightglue_scores(
    model: LightGlue,
    keypoints0: torch.Tensor,
    keypoints1: torch.Tensor,
    descriptors0: torch.Tensor,
    descriptors1: torch.Tensor,
    mask0: torch.Tensor,
    mask1: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match ``B`` padded pairs with every LightGlue layer; padding never attends nor is attended to.

    Args:
        keypoints0: ``(B, M, 2 or 4)`` keypoints normalised by :func:`normalize_keypoints` (+ scale,
            orientation).
        descriptors0: ``(B, M, D)``; ``mask0``: ``(B, M)`` valid keypoints. Same for image 1 with ``N``.

    Returns:
        ``matches0 (B, M)``: index in image 1 of each keypoint's mutual match above ``filter_threshold``, or
        -1; ``scores0 (B, M)``: its confidence, 0 where unmatched.
    """
    descriptors0 = model.input_proj(descriptors0)
    descriptors1 = model.input_proj(descriptors1)
    encoding0 = model.posenc(keypoints0)
    encoding1 = model.posenc(keypoints1)
    # (B, 1, M, 1): one head dimension, so the masks broadcast over the attention heads
    attention_mask0, attention_mask1 = mask0[:, None, :, None], mask1[:, None, :, None]
    for layer in model.transformers:
        descriptors0, descriptors1 = layer.masked_forward(
            descriptors0, descriptors1, encoding0, encoding1, attention_mask0, attention_mask1
        )
    assignment = model.log_assignment[-1]
    _, similarity = assignment(descriptors0, descriptors1)
    z0, z1 = assignment.matchability(descriptors0), assignment.matchability(descriptors1)
    valid = mask0[:, :, None] & mask1[:, None, :]
    # the dual softmax of kornia's sigmoid_log_double_softmax, over valid keypoints only
    scores = (
        F.log_softmax(similarity.masked_fill(~mask1[:, None, :], -torch.inf), dim=2)
        + F.log_softmax(similarity.masked_fill(~mask0[:, :, None], -torch.inf), dim=1)
        + F.logsigmoid(z0)
        + F.logsigmoid(z1).transpose(1, 2)
    )
    scores = scores.masked_fill(~valid, -torch.inf)  # also replaces the NaN of an image without keypoints
    best0, best1 = scores.max(dim=2), scores.max(dim=1)
    matches0, matches1 = best0.indices, best1.indices
    mutual = torch.arange(matches0.shape[1], device=matches0.device) == matches1.gather(1, matches0)
    scores0 = torch.where(mutual & mask0, best0.values.exp(), 0.0)
    matched = scores0 > model.conf.filter_threshold
    return torch.where(matched, matches0, -1), torch.where(matched, scores0, 0.0)


class MatchLightGlue(MatchPairs):
    """LightGlue (Lindenberger et al., 2023) on :class:`LocalFeatures` of the matching family.

    Every layer runs for every pair (no early stopping or point pruning), so a pair's matches do not depend on
    the batch it is in. ``matcher(extractor(query_dataset), extractor(database_dataset))`` gives ``(Q, G)``
    scores.

    Args:
        features: ``"aliked"``, ``"disk"``, ``"sift"`` or ``"superpoint"``; must match the extractor.
        collector: turns matches into scores; defaults to ``CollectCounts(thresholds=(0.5,))``.
        batch_size: pairs per forward pass; None: 128 on CUDA, 8 on CPU (where LightGlue is compute-bound and
            large batches only run slower: about 85 ms per pair at 8, 130 ms at 128, 2 cores, 256 keypoints).
        device: device of the matcher; None picks CUDA when available.
        weights: explicit LightGlue checkpoint; None resolves ``<features>_lightglue`` (see
            ``features.weights``).
        weights_dir: folder searched for the checkpoint before the torch hub cache.
        init_threshold: matches with confidence at or below it are dropped before the collector.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        features: str = "aliked",
        collector: Collector | None = None,
        batch_size: int | None = None,
        device: str | torch.device | None = None,
        weights: str | os.PathLike | None = None,
        weights_dir: str | os.PathLike | None = None,
        init_threshold: float = 0.1,
        progress: bool = True,
    ) -> None:
        if batch_size is None:
            batch_size = 128 if default_device(device).type == "cuda" else 8
        super().__init__(collector, batch_size, device, progress)
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}.")
        self.features = features
        config = {key: value for key, value in LightGlue.features[features].items() if key != "weights"}
        model = LightGlue(
            None, **config, depth_confidence=-1, width_confidence=-1, filter_threshold=init_threshold
        )
        state_dict, self.weights_fingerprint = load_weights(f"{features}_lightglue", weights, weights_dir)
        source = str(weights or f"{features}_lightglue")
        # old checkpoints carry an unused log_assignment.*.r
        load_state_dict_checked(model, rename_lightglue_keys(state_dict), source, ignore_unexpected=r"\.r$")
        self.model = model.eval().to(self.device)

    def prepare(
        self, query: LocalFeatures, database: LocalFeatures, pairs: torch.Tensor
    ) -> tuple[LocalFeatures, LocalFeatures]:
        for name, part in (("query", query), ("database", database)):
            if not isinstance(part, LocalFeatures):
                raise TypeError(
                    f"MatchLightGlue takes LocalFeatures as {name}, got {type(part).__name__}: "
                    f"extract them first, e.g. {self.features.capitalize()}Extractor()(dataset)."
                )
            if part.extractor != self.features:
                raise ValueError(
                    f"MatchLightGlue(features={self.features!r}) got {part.extractor!r} features as {name}."
                )
        if query.config_key != database.config_key:
            raise ValueError(
                f"Query and database features come from different extractor configurations: "
                f"{query.config_key!r} vs {database.config_key!r}."
            )
        if self.model.conf.add_scale_ori and (query.scales is None or query.orientations is None):
            raise ValueError(f"LightGlue({self.features!r}) needs keypoint scales and orientations.")
        return query.to(self.device), database.to(self.device)

    def _inputs(self, features: LocalFeatures) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # detected keypoints come first, so the batch can drop the padding columns no image of it uses
        width = max(int(features.num_keypoints.max()), 1)
        keypoints = normalize_keypoints(features.keypoints[:, :width], features.image_sizes)
        if self.model.conf.add_scale_ori:
            extra = [features.scales[:, :width, None], features.orientations[:, :width, None]]
            keypoints = torch.cat([keypoints, *extra], dim=-1)
        return keypoints, features.descriptors[:, :width], features.mask[:, :width]

    def match(self, prepared: tuple[LocalFeatures, LocalFeatures], pairs: torch.Tensor) -> PairMatches:
        query, database = prepared
        pairs = pairs.to(self.device)
        features0, features1 = query[pairs[:, 0]], database[pairs[:, 1]]
        keypoints0, descriptors0, mask0 = self._inputs(features0)
        keypoints1, descriptors1, mask1 = self._inputs(features1)
        matches0, scores0 = lightglue_scores(
            self.model, keypoints0, keypoints1, descriptors0, descriptors1, mask0, mask1
        )
        matched = matches0 >= 0
        width = matches0.shape[1]
        matched_keypoints1 = features1.keypoints.gather(1, matches0.clamp(min=0)[..., None].expand(-1, -1, 2))
        return PairMatches(scores0, features0.keypoints[:, :width], matched_keypoints1, matched)
