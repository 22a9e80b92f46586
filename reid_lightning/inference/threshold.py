"""The open-set threshold: the cut of the top-1 score that best separates known from new individuals on labelled
queries (max sqrt(BAKS * BAUS)), optionally smoothed for the jagged curves of small catalogues."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..metrics.open_set import per_identity_mean

THRESHOLD_SMOOTHING = 0.09
"""Half-width of the window a small catalogue's gmean is averaged over, as a fraction of the central 90 % spread of
the validation top-1 scores (0.05 of cosine on the 35-animal catalogues of bench_small_catalogue, where it was
measured)."""


def smoothing_window(scores: Tensor) -> float:
    """:data:`THRESHOLD_SMOOTHING` times the spread between the 5th and 95th percentiles of the finite ``scores``."""
    finite = scores[torch.isfinite(scores)].double()
    if len(finite) < 2:
        return 0.0
    low, high = torch.quantile(finite, torch.tensor([0.05, 0.95], dtype=torch.float64))
    return THRESHOLD_SMOOTHING * float(high - low)


def choose_threshold(*, query_labels: Tensor, known: Tensor, top1_labels: Tensor, scores: Tensor,
                     smoothing: float = 0.0) -> tuple[float, float]:
    """The threshold maximising ``gmean = sqrt(BAKS * BAUS)`` on these queries, and its gmean.

    ``smoothing`` 0: every cut between two consecutive distinct scores is tried (plus "all known" and "all new");
    the threshold returned is the midpoint of the best cut, so that it does not sit on a validation score. Ties
    between cuts go to the lowest threshold.

    ``smoothing`` w > 0: the threshold whose mean gmean over the thresholds within ``± w`` (on the score scale, in
    steps of ``w / 10``) is highest. With a handful of identities the gmean curve is jagged and its highest point
    often sits at the edge of a plateau; the smoothed maximum lands inside it.
    Needs known and unknown queries.
    """
    known = known.cpu().bool()
    if not known.any() or known.all():
        raise ValueError("choosing an open-set threshold needs both queries whose identity is in the gallery and "
                         f"queries whose identity is not (got {int(known.sum())} known of {len(known)})")
    query_labels, top1_labels = query_labels.cpu(), top1_labels.cpu()
    scores = torch.nan_to_num(scores.cpu().double(), nan=-math.inf)
    distinct = torch.unique(scores[torch.isfinite(scores)])  # ascending
    if smoothing > 0 and len(distinct):
        step = smoothing / 10
        cuts = torch.arange(float(distinct[0]) - smoothing - step, float(distinct[-1]) + smoothing + 2 * step, step,
                            dtype=torch.float64)
    elif len(distinct):  # cut i accepts scores >= cuts[i]: below everything, between neighbours, above everything
        cuts = torch.cat([distinct[:1] - 1, (distinct[1:] + distinct[:-1]) / 2, distinct[-1:] + 1])
    else:
        cuts = torch.zeros(1, dtype=torch.float64)
    gmean = _gmean_per_cut(cuts, query_labels=query_labels, known=known, top1_labels=top1_labels, scores=scores)
    objective = gmean
    if smoothing > 0 and len(distinct):
        window = torch.ones(1, 1, 21, dtype=torch.float64) / 21
        objective = torch.nn.functional.conv1d(torch.nn.functional.pad(gmean[None, None], (10, 10), mode="replicate"),
                                               window).flatten()
    best = int(torch.argmax(objective))
    return float(cuts[best]), float(gmean[best])


def _gmean_per_cut(cuts: Tensor, *, query_labels: Tensor, known: Tensor, top1_labels: Tensor, scores: Tensor
                   ) -> Tensor:
    """(T,) sqrt(BAKS * BAUS) when scores ``>= cuts[t]`` are answered known."""
    accepted = scores[None, :] >= cuts[:, None]  # (T, Q)
    right_known = accepted & (top1_labels == query_labels)[None, :]
    _, known_id = torch.unique(query_labels[known], return_inverse=True)
    _, unknown_id = torch.unique(query_labels[~known], return_inverse=True)
    return torch.sqrt(per_identity_mean(right_known[:, known], known_id)
                      * per_identity_mean(~accepted[:, ~known], unknown_id))
