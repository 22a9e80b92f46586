"""Open-set identification metrics: is the top-1 answer the right known individual, or rightly "new"?

Definitions of wildlife-datasets / AnimalCLEF2025. A query is *known* when its identity is in the gallery and
*unknown* otherwise (unknown animals, negative codes, are each their own unknown identity). A query is answered
"new" when its score (top-1 similarity or calibrated probability) is below the threshold, else by the identity of
its top-1 candidate.

- BAKS: mean over known identities of the fraction of their queries answered with the right identity ("new" is
  wrong).
- BAUS: mean over unknown identities of the fraction of their queries answered "new".
- gmean: ``sqrt(BAKS * BAUS)``, the AnimalCLEF2025 score.
- acc_known / acc_unknown: the same fractions over samples instead of identities.
- auroc: area under the ROC curve of the new-individual decision (positive: unknown query; a lower score means
  "more likely new"); threshold-free.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.functional.classification import binary_auroc
from torchmetrics.utilities import dim_zero_cat

OPEN_SET_METRICS = ("BAKS", "BAUS", "gmean", "acc_known", "acc_unknown", "auroc")


def _balanced(correct: Tensor, identities: Tensor) -> Tensor:
    """Mean over identities of the mean of ``correct`` (bool, (N,)) within each identity (NaN when N = 0)."""
    if len(identities) == 0:
        return torch.tensor(float("nan"))
    _, inverse = torch.unique(identities, return_inverse=True)
    count = torch.bincount(inverse).double()
    right = torch.bincount(inverse, weights=correct.double())
    return (right / count).mean()


def open_set_metrics(*, query_labels: Tensor, known: Tensor, top1_labels: Tensor, scores: Tensor,
                     threshold: float | None) -> dict[str, float]:
    """Open-set metrics of one set of queries (see the module docstring).

    Args:
        query_labels: (Q,) identity codes of the queries.
        known: (Q,) bool: the query's identity is in the gallery.
        top1_labels: (Q,) identity code of every query's top-1 candidate.
        scores: (Q,) score of the top-1 candidate (higher = more likely known); NaN / -inf: no candidate.
        threshold: lowest score answered as a known individual; None computes only ``auroc``.

    Returns:
        The values of :data:`OPEN_SET_METRICS` (NaN where undefined, e.g. BAUS without unknown queries).
    """
    query_labels, known, top1_labels = query_labels.cpu(), known.cpu().bool(), top1_labels.cpu()
    scores = torch.nan_to_num(scores.cpu().double(), nan=-math.inf)
    values = {name: math.nan for name in OPEN_SET_METRICS}
    if known.any() and (~known).any():
        # positive class "new": a low score means new. Dense ranks in [0, 1] keep order and ties exactly
        # (raw scores outside [0, 1] would go through torchmetrics' sigmoid and could collapse into ties)
        _, rank = torch.unique(-scores, return_inverse=True)
        values["auroc"] = float(binary_auroc(rank.double() / max(int(rank.max()), 1), (~known).long()))
    if threshold is None:
        return values
    answered_new = ~(scores >= threshold)
    right_known = ~answered_new & (top1_labels == query_labels)
    baks = _balanced(right_known[known], query_labels[known])
    baus = _balanced(answered_new[~known], query_labels[~known])
    values.update(BAKS=float(baks), BAUS=float(baus), gmean=float(torch.sqrt(baks * baus)),
                  acc_known=float(right_known[known].double().mean()) if known.any() else math.nan,
                  acc_unknown=float(answered_new[~known].double().mean()) if (~known).any() else math.nan)
    return values


def per_identity_mean(correct: Tensor, identity: Tensor) -> Tensor:
    """correct (T, N) bool, identity (N,) in 0..I-1 -> (T,) mean over identities of per-identity accuracy."""
    num = int(identity.max()) + 1
    count = torch.bincount(identity, minlength=num).double()
    right = torch.zeros(correct.shape[0], num, dtype=torch.float64).index_add_(1, identity, correct.double())
    return (right / count).mean(dim=1)


class OpenSetMetrics(Metric):
    """torchmetrics form of :func:`open_set_metrics`: ``update`` per query chunk, states concatenated across
    processes (DDP gives the single-process values when each query is updated on exactly one process)."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, threshold: float | None = None, **kwargs) -> None:
        """
        Args:
            threshold: lowest score answered as a known individual (None: only ``auroc``).
        """
        super().__init__(**kwargs)
        self.threshold = threshold
        for name in ("query_labels", "known", "top1_labels", "scores"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, *, query_labels: Tensor, known: Tensor, top1_labels: Tensor, scores: Tensor) -> None:
        """All (q,): query identity codes, identity-in-gallery flags, top-1 identity codes, top-1 scores."""
        self.query_labels.append(query_labels.long())
        self.known.append(known.bool())
        self.top1_labels.append(top1_labels.long())
        self.scores.append(scores.double())

    def compute(self) -> dict[str, float]:
        return open_set_metrics(query_labels=dim_zero_cat(self.query_labels), known=dim_zero_cat(self.known),
                                top1_labels=dim_zero_cat(self.top1_labels), scores=dim_zero_cat(self.scores),
                                threshold=self.threshold)
