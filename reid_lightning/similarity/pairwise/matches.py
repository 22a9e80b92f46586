"""The matches of a batch of image pairs: what a matcher hands to a collector."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class PairMatches:
    """Matches of ``P`` pairs, padded to ``M`` matches per pair.

    Args:
        confidence: ``(P, M)`` float32 match confidence in [0, 1]; 0 where padded.
        keypoints0: ``(P, M, 2)`` ``(x, y)`` pixel positions in the query image of each pair.
        keypoints1: ``(P, M, 2)`` the matched positions in the database image.
        mask: ``(P, M)`` bool, True for a match, False for padding.
    """

    confidence: torch.Tensor
    keypoints0: torch.Tensor
    keypoints1: torch.Tensor
    mask: torch.Tensor

    def __len__(self) -> int:
        return self.mask.shape[0]

    def per_pair(self) -> list[PairMatches]:
        """One unpadded :class:`PairMatches` per pair (``P = 1``, ``M`` = that pair's match count), on the CPU."""
        rows = []
        for confidence, keypoints0, keypoints1, mask in zip(self.confidence, self.keypoints0, self.keypoints1,
                                                            self.mask, strict=True):
            mask = mask.cpu()
            rows.append(PairMatches(confidence.cpu()[mask][None], keypoints0.cpu()[mask][None],
                                    keypoints1.cpu()[mask][None], mask[mask][None]))
        return rows

    @classmethod
    def empty(cls) -> PairMatches:
        """Matches of zero pairs."""
        points = torch.zeros(0, 0, 2)
        return cls(torch.zeros(0, 0), points, points, torch.zeros(0, 0, dtype=torch.bool))

    @classmethod
    def from_flat(
        cls,
        pair_index: torch.Tensor,
        confidence: torch.Tensor,
        keypoints0: torch.Tensor,
        keypoints1: torch.Tensor,
        num_pairs: int,
    ) -> PairMatches:
        """Pack a flat list of matches (pair of each match ``pair_index (T,)``) into padded per-pair rows."""
        counts = torch.bincount(pair_index, minlength=num_pairs)
        width = int(counts.max()) if num_pairs and len(pair_index) else 0
        order = torch.argsort(pair_index, stable=True)
        pair_index = pair_index[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = torch.arange(len(pair_index), device=pair_index.device) - starts[pair_index]
        out_confidence = confidence.new_zeros(num_pairs, width)
        out_keypoints0 = keypoints0.new_zeros(num_pairs, width, 2)
        out_keypoints1 = keypoints1.new_zeros(num_pairs, width, 2)
        mask = torch.zeros(num_pairs, width, dtype=torch.bool, device=pair_index.device)
        out_confidence[pair_index, slot] = confidence[order]
        out_keypoints0[pair_index, slot] = keypoints0[order]
        out_keypoints1[pair_index, slot] = keypoints1[order]
        mask[pair_index, slot] = True
        return cls(out_confidence.float(), out_keypoints0.float(), out_keypoints1.float(), mask)
