"""LightGlue matching of extracted local features (kornia's network, weights via ``features.weights``)."""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from kornia.feature import LightGlue
from kornia.feature.lightglue import filter_matches, normalize_keypoints

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


def lightglue_adaptive_scores(
    model: LightGlue,
    keypoints0: torch.Tensor,
    keypoints1: torch.Tensor,
    descriptors0: torch.Tensor,
    descriptors1: torch.Tensor,
    depth_confidence: float,
    width_confidence: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Match one unpadded pair with LightGlue's adaptive depth (early exit) and width (point pruning).

    After each layer but the last, the pair stops once more than ``depth_confidence`` of its points are
    confidently decided, and drops the points that are confidently decided and unmatchable (matchability below
    ``1 - width_confidence``); -1 disables either. Alone in its batch, a pair's result never depends on others.

    Args:
        keypoints0: ``(1, M, 2 or 4)`` normalised keypoints (+ scale, orientation); ``descriptors0``:
            ``(1, M, D)``; the same for image 1 with ``N``. ``M, N > 0``.

    Returns:
        ``matches0 (1, M)`` and ``scores0 (1, M)`` as :func:`lightglue_scores`.
    """
    num0, num1 = keypoints0.shape[1], keypoints1.shape[1]
    device = keypoints0.device
    descriptors0 = model.input_proj(descriptors0)
    descriptors1 = model.input_proj(descriptors1)
    encoding0 = model.posenc(keypoints0)
    encoding1 = model.posenc(keypoints1)
    kept0, kept1 = torch.arange(num0, device=device), torch.arange(num1, device=device)
    # kornia's per-device rule: below this many points the gather of pruning costs more than it saves
    min_points = model.pruning_min_kpts(device)
    last = model.conf.n_layers - 1
    layer_index = last
    for layer_index, layer in enumerate(model.transformers):
        descriptors0, descriptors1 = layer(descriptors0, descriptors1, encoding0, encoding1)
        if layer_index == last:
            break
        # the model's own conf disables both mechanisms (the full-depth path), so the rules are applied here
        threshold = model.confidence_thresholds[layer_index]
        confidence0, confidence1 = model.token_confidence[layer_index](descriptors0, descriptors1)
        if depth_confidence > 0:
            # pruned points count as decided: the ratio is over the pair's original number of points
            undecided = (confidence0 < threshold).sum() + (confidence1 < threshold).sum()
            if 1.0 - undecided / (num0 + num1) > depth_confidence:
                break
        if width_confidence > 0:
            matchability = model.log_assignment[layer_index].get_matchability
            # a point goes when it is unmatchable, unless its decision is not confident yet
            if descriptors0.shape[1] > min_points:
                keep = ((matchability(descriptors0) > 1 - width_confidence) | (confidence0 <= threshold))[0]
                kept0, descriptors0, encoding0 = kept0[keep], descriptors0[:, keep], encoding0[..., keep, :]
            if descriptors1.shape[1] > min_points:
                keep = ((matchability(descriptors1) > 1 - width_confidence) | (confidence1 <= threshold))[0]
                kept1, descriptors1, encoding1 = kept1[keep], descriptors1[:, keep], encoding1[..., keep, :]
    matches0 = torch.full((1, num0), -1, device=device)
    scores0 = torch.zeros(1, num0, device=device)
    if not len(kept0) or not len(kept1):
        return matches0, scores0
    log_assignment, _ = model.log_assignment[layer_index](descriptors0, descriptors1)
    kept_matches, _, kept_scores, _ = filter_matches(log_assignment, model.conf.filter_threshold)
    matched = kept_matches[0] >= 0
    matches0[0, kept0[matched]] = kept1[kept_matches[0, matched]]
    scores0[0, kept0[matched]] = kept_scores[0, matched].float()
    return matches0, scores0


class MatchLightGlue(MatchPairs):
    """LightGlue (Lindenberger et al., 2023) on :class:`LocalFeatures` of the matching family.

    Two paths, both giving a pair the same matches whatever batch it is in: full depth (every layer for every
    pair, padded batches; exactly reproducible) and adaptive (LightGlue's early exit and point pruning, one pair
    at a time: most re-ID pairs, different individuals with little overlap, are decided in a few layers).
    ``matcher(extractor(query_dataset), extractor(database_dataset))`` gives ``(Q, G)`` scores.

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
        adaptive: adaptive depth and width; None: on CPU (where it is several times faster, see the README's
            rerank benchmark), full depth on CUDA (where large padded batches are faster).
        depth_confidence: adaptive mode stops a pair once this fraction of its points is confident (paper: 0.95;
            0.9 measured as fast and as accurate on re-ID pairs, see the README's rerank benchmark).
        width_confidence: adaptive mode prunes points whose matchability is below ``1 - width_confidence``
            (paper: 0.99; default 0.95, measured with ``depth_confidence``).
        bf16: run the network under bfloat16 autocast (faster on CPUs with bf16 support; changes a few
            borderline matches, see the README).
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
        adaptive: bool | None = None,
        depth_confidence: float = 0.9,
        width_confidence: float = 0.95,
        bf16: bool = False,
    ) -> None:
        if batch_size is None:
            batch_size = 128 if default_device(device).type == "cuda" else 8
        super().__init__(collector, batch_size, device, progress)
        if features not in FEATURES:
            raise ValueError(f"features must be one of {FEATURES}, got {features!r}.")
        self.features = features
        self.adaptive = self.device.type == "cpu" if adaptive is None else adaptive
        self.depth_confidence = depth_confidence
        self.width_confidence = width_confidence
        self.bf16 = bf16
        self.init_threshold = init_threshold
        config = {key: value for key, value in LightGlue.features[features].items() if key != "weights"}
        model = LightGlue(
            None, **config, depth_confidence=-1, width_confidence=-1, filter_threshold=init_threshold
        )
        state_dict, self.weights_fingerprint = load_weights(f"{features}_lightglue", weights, weights_dir)
        source = str(weights or f"{features}_lightglue")
        # old checkpoints carry an unused log_assignment.*.r
        load_state_dict_checked(model, rename_lightglue_keys(state_dict), source, ignore_unexpected=r"\.r$")
        self.model = model.eval().to(self.device)

    def config(self) -> dict[str, Any]:
        return super().config() | {
            "features": self.features, "adaptive": self.adaptive, "depth_confidence": self.depth_confidence,
            "width_confidence": self.width_confidence, "bf16": self.bf16, "init_threshold": self.init_threshold,
            "weights": self.weights_fingerprint,
        }

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
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            if self.adaptive:
                return self._match_adaptive(features0, features1)
            return self._match_full(features0, features1)

    def _match_full(self, features0: LocalFeatures, features1: LocalFeatures) -> PairMatches:
        keypoints0, descriptors0, mask0 = self._inputs(features0)
        keypoints1, descriptors1, mask1 = self._inputs(features1)
        matches0, scores0 = lightglue_scores(
            self.model, keypoints0, keypoints1, descriptors0, descriptors1, mask0, mask1
        )
        matched = matches0 >= 0
        width = matches0.shape[1]
        matched_keypoints1 = features1.keypoints.gather(1, matches0.clamp(min=0)[..., None].expand(-1, -1, 2))
        return PairMatches(scores0.float(), features0.keypoints[:, :width], matched_keypoints1, matched)

    def _match_adaptive(self, features0: LocalFeatures, features1: LocalFeatures) -> PairMatches:
        """One pair at a time, unpadded, so that each pair exits and prunes on its own points only."""
        # start from empty rows, so a batch in which no pair has keypoints on both sides packs to no matches
        points = features0.keypoints.new_zeros(0, 2)
        pair_index = [torch.zeros(0, dtype=torch.long, device=points.device)]
        confidence, points0, points1 = [points.new_zeros(0)], [points], [points]
        for row in range(len(features0)):
            side0, side1 = features0[row], features1[row]
            if not side0.num_keypoints.item() or not side1.num_keypoints.item():
                continue
            keypoints0, descriptors0, _ = self._inputs(side0)
            keypoints1, descriptors1, _ = self._inputs(side1)
            matches0, scores0 = lightglue_adaptive_scores(
                self.model, keypoints0, keypoints1, descriptors0, descriptors1,
                depth_confidence=self.depth_confidence, width_confidence=self.width_confidence,
            )
            found = torch.nonzero(matches0[0] >= 0).squeeze(1)
            pair_index.append(torch.full_like(found, row))
            confidence.append(scores0[0, found])
            points0.append(side0.keypoints[0, found])
            points1.append(side1.keypoints[0, matches0[0, found]])
        return PairMatches.from_flat(
            torch.cat(pair_index), torch.cat(confidence), torch.cat(points0), torch.cat(points1), len(features0)
        )
