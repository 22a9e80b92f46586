"""Open set in one place: is a query's top-1 answer a known individual or a new one, how sure is it, and which
new photos show the same new individual?

- :func:`decision_inputs` reads the top-1 answer of every query from :class:`RetrievalResults` (raw scores, or the
  fused probabilities of reranked results);
- :func:`fit_open_set` chooses the threshold (max sqrt(BAKS * BAUS)), fits the confidence calibration and chooses
  the discovery cut (max AMI of the grouping of the unknown queries; with fewer than 10 unknown identities a
  quantile of the cosines of different animals) on labelled held-out queries (validation), holding some identities
  out of the gallery when none is unknown;
- :class:`OpenSetModel` decides, gives the confidence and is saved/loaded (checkpoint key and ``threshold.json``
  through the same :meth:`OpenSetModel.to_dict`);
- :func:`open_set_log_values` is everything logged about it;
- :func:`open_set_predict` / :class:`OpenSetDecision` are the seed's plain thresholding of given labels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import adjusted_mutual_info_score
from torch import Tensor

from ..metrics.discovery import discovery_metrics
from ..metrics.open_set import open_set_metrics
from ..retrieval import RetrievalResults
from ..runtime.answers import NEW_INDIVIDUAL, answered_new
from ..runtime.calibration import answer_confidence
from ..runtime.grouping import DEFAULT_K, Discovery, group_new_photos
from ..similarity.calibration import Calibration, IsotonicCalibration, expected_calibration_error
from .choice_intervals import LEVEL, cut_interval, floor_interval, threshold_interval
from .discovery import DIFFERENT_FLOOR_QUANTILE, choose_discovery_threshold, different_identity_floor
from .threshold import THRESHOLD_SMOOTHING, choose_threshold, smoothing_window


def _to_numpy(values: Any) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


def open_set_predict(labels: Any, *, scores: Any, threshold: float, new_label: Any = NEW_INDIVIDUAL) -> np.ndarray:
    """Replace a prediction by `new_label` when its score is below `threshold` (or NaN).

    Args:
        labels: predicted identities, any shape (e.g. (Q,) from KnnClassifier, (Q, k) from TopkClassifier).
        scores: scores of the predictions, same shape (ideally calibrated probabilities).
        threshold: lowest score accepted as a known individual.
        new_label: label given to rejected predictions.

    Returns:
        A new array of `labels`' shape; its dtype is the labels' combined with `new_label`'s.
    """
    labels, scores = _to_numpy(labels), _to_numpy(scores)
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} must have the same shape")
    try:
        known = scores.astype(np.float64) >= threshold
    except (TypeError, ValueError) as error:
        raise TypeError(f"scores must be numeric, got dtype {scores.dtype}; pass scores=, not labels") from error
    return np.where(known, labels, new_label)


class OpenSetDecision:
    """Callable form of `open_set_predict`: `decision(labels, scores=scores) -> labels`."""

    def __init__(self, threshold: float = 0.5, new_label: Any = NEW_INDIVIDUAL) -> None:
        """
        Args:
            threshold: lowest (calibrated) score accepted as a known individual.
            new_label: label given to predictions scored below the threshold.
        """
        self.threshold = threshold
        self.new_label = new_label

    def __call__(self, labels: Any, *, scores: Any) -> np.ndarray:
        """Labels of `labels`' shape, with `new_label` where `scores` < threshold or NaN."""
        return open_set_predict(labels, scores=scores, threshold=self.threshold, new_label=self.new_label)


# ---------------------------------------------------------------------------------------------- inputs
def decision_inputs(results: RetrievalResults, *, keep_gallery: Tensor | None = None) -> dict[str, Tensor]:
    """The top-1 answer of every labelled query, as keyword arguments of ``open_set_metrics`` / ``choose_threshold``:
    ``query_labels``, ``known`` (another image of its identity is rankable in the gallery), ``top1_labels`` and
    ``scores`` (Q,). The top-1 is the first candidate in the results' order (reranked results: pass
    ``results.head(B)``, the shortlist whose scores are probabilities).

    Args:
        keep_gallery: optional (G,) bool: gallery images still in the gallery; candidates of removed images are
            skipped and queries whose identity is wholly removed become unknown (no candidate left: score -inf).
    """
    if results.query_labels is None:
        raise ValueError("open-set decisions need the query identities; these results have no query_labels")
    query_labels = results.query_labels.cpu()
    candidates = results.candidate_indices.cpu()
    usable = candidates >= 0
    if results.stats is not None:  # respects exclusions: leave-one-out self pairs, same-sequence images
        known = results.stats.num_positives.cpu() > 0
    else:
        known = torch.isin(query_labels, torch.unique(results.gallery_labels.cpu())) & (query_labels >= 0)
    if keep_gallery is not None:
        keep_gallery = keep_gallery.cpu()
        usable &= keep_gallery[candidates.clamp(min=0)]
        known &= torch.isin(query_labels, results.gallery_labels.cpu()[keep_gallery])
    first = usable.long().argmax(dim=1, keepdim=True)  # first usable slot (0 when none)
    found = usable.any(dim=1)
    scores = results.candidate_scores.cpu().double().gather(1, first).squeeze(1)
    return {"query_labels": query_labels, "known": known,
            "top1_labels": results.candidate_labels.cpu().gather(1, first).squeeze(1),
            "scores": torch.where(found, scores, -math.inf)}


def held_out_gallery_identities(*, query_labels: Tensor, gallery_labels: Tensor, fraction: float,
                                seed: int = 0) -> Tensor:
    """(G,) bool mask of the gallery images to keep when ``fraction`` of the identities shared by queries and
    gallery are removed from the gallery, so that their queries become unknown individuals (at least one
    identity is removed and one kept). Used to choose a threshold on a validation set without unknown queries."""
    if not 0 < fraction < 1:
        raise ValueError(f"open_set_holdout={fraction} must be in (0, 1)")
    query_labels, gallery_labels = query_labels.cpu(), gallery_labels.cpu()
    shared = np.intersect1d(query_labels[query_labels >= 0].numpy(), gallery_labels.numpy())
    if len(shared) < 2:
        raise ValueError(f"only {len(shared)} validation identities are in the gallery; holding some out to choose "
                         "the open-set threshold needs at least 2 (give more validation images, or pass "
                         "--model.open_set_threshold)")
    count = min(len(shared) - 1, max(1, round(fraction * len(shared))))
    held = np.random.default_rng(seed).choice(shared, size=count, replace=False)
    return ~torch.isin(gallery_labels, torch.from_numpy(held))


# ---------------------------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class OpenSetModel:
    """How a top-1 answer is decided and how sure it is, fitted on labelled held-out queries.

    Attributes:
        threshold: lowest top-1 score answered as a known individual (below: ``new_individual``); None when
            none could be chosen (the confidence still works).
        score: what the scores are, for people (``"top-1 cosine score"``, ``"fused calibrated probability"``).
        validation_gmean: sqrt(BAKS * BAUS) of the threshold on the queries it was chosen on.
        named_right: calibration of P(a named answer is right | score).
        new_right: calibration of P(the query is a new individual | score) (fitted on -score: increasing).
        held_out: how unknown queries were made (empty when the validation split had some).
        discovery_threshold: cosine cut grouping new photos into proposed individuals (average linkage,
            :func:`~reid_lightning.inference.discover`); None: no grouping.
        discovery_k: None: the grouping uses all pairs of new photos; a number: each photo's ``discovery_k``
            nearest new photos (see :func:`fit_open_set` for the choice).
        discovery_ami: adjusted mutual information of the cut on the unknown queries it was chosen on.
        threshold_interval, discovery_interval: central 90 % of the threshold / cut chosen on resamples of the
            validation identities (:mod:`~reid_lightning.inference.choice_intervals`): how far the choice moves
            with which animals validation holds.
        unseen_identities: identities whose queries were unknown when choosing (kept out of training, or held out
            of the gallery).
        discovery_rule: how the cut was chosen, for people, when not by the best AMI (too few unknown identities:
            a quantile of the cosines of different validation animals, :data:`FEW_UNSEEN_CUT_QUANTILE`).
        discovery_join_cut: with a top-k graph, its groups whose photos' mean cosine over all their pairs reaches
            this are joined (:func:`~reid_lightning.runtime.grouping.join_groups`), so a new animal with more photos
            than the graph holds together forms one group: the cosine only 2 % of the pairs of photos of different
            validation animals reach (:data:`DIFFERENT_FLOOR_QUANTILE`). None: no joining.
    """

    threshold: float | None
    score: str
    validation_gmean: float | None = None
    named_right: Calibration | None = None
    new_right: Calibration | None = None
    held_out: str = ""
    discovery_threshold: float | None = None
    discovery_k: int | None = DEFAULT_K
    discovery_ami: float | None = None
    threshold_interval: tuple[float, float] | None = None
    discovery_interval: tuple[float, float] | None = None
    unseen_identities: int | None = None
    discovery_rule: str = ""
    discovery_join_cut: float | None = None

    def with_overrides(self, *, threshold: float | None = None, discovery_threshold: float | None = None
                       ) -> OpenSetModel:
        """This model with fixed cuts (``--model.open_set_threshold``, ``--model.discovery_threshold``) where given;
        the calibration is kept."""
        model = self if threshold is None else replace(self, threshold=float(threshold), validation_gmean=None,
                                                       threshold_interval=None)
        if discovery_threshold is not None:
            model = replace(model, discovery_threshold=float(discovery_threshold), discovery_ami=None,
                            discovery_interval=None, discovery_rule="")
        return model

    def group(self, embeddings: Tensor) -> Discovery | None:
        """Proposed individuals among new photos ``(N, D)`` (None without a discovery cut)."""
        if self.discovery_threshold is None or len(embeddings) == 0:
            return None
        return group_new_photos(embeddings, threshold=self.discovery_threshold, k=self.discovery_k,
                                join_threshold=self.discovery_join_cut)

    def is_new(self, scores: Tensor) -> Tensor:
        """(Q,) bool: the answer is ``new_individual`` (score below the threshold, or NaN / no candidate)."""
        if self.threshold is None:
            raise ValueError("no open-set threshold: none could be chosen on validation; pass "
                             "--model.open_set_threshold <score>")
        return torch.from_numpy(answered_new(scores.detach().cpu().double().numpy(), self.threshold))

    def confidence(self, scores: Tensor, is_new: Tensor) -> Tensor:
        """(Q,) calibrated probability that each answer is right: P(named individual right | score) for named
        answers, P(new individual | score) for ``new_individual`` answers (NaN without calibration)."""
        calibrated = self.named_right is not None and self.new_right is not None
        return torch.from_numpy(answer_confidence(
            scores.detach().cpu().double().numpy(), is_new.cpu().numpy(),
            named_right=self.named_right.to_dict() if calibrated else None,
            new_right=self.new_right.to_dict() if calibrated else None))

    def summary(self, num_queries: int) -> str:
        """One line for people: the threshold and how it was chosen (or why there is none)."""
        if self.threshold is None:
            return (f"no open-set threshold chosen on {num_queries} validation queries ({self.held_out}): pass "
                    "--model.open_set_threshold")
        held = f" with {self.held_out}" if self.held_out else ""
        pairs = "all pairs" if self.discovery_k is None else f"each photo's {self.discovery_k} nearest"
        chosen = ("given" if self.discovery_ami is None else
                  f"{self.discovery_rule}AMI {self.discovery_ami:.4f} on the unknown queries")
        joined = ("" if self.discovery_join_cut is None or self.discovery_k is None else
                  f", groups joined where all their pairs average cosine "
                  f"{max(self.discovery_join_cut, self.discovery_threshold or -1.0):.4f} or more")
        grouping = ("" if self.discovery_threshold is None else f"; new photos grouped on {pairs} at cosine "
                    f"{self.discovery_threshold:.4f}{_between(self.discovery_interval)} ({chosen}){joined}")
        if self.validation_gmean is None:
            return f"open-set threshold {self.threshold:.4f} ({self.score}) given (--model.open_set_threshold){grouping}"
        return (f"open-set threshold {self.threshold:.4f}{_between(self.threshold_interval)} ({self.score}) chosen "
                f"on {num_queries} validation queries{held}: sqrt(BAKS*BAUS) = {self.validation_gmean:.4f}{grouping}")

    def caution(self) -> str | None:
        """One line when the choice rests on too few unknown validation identities: the consequence and what to
        do (None otherwise)."""
        if self.threshold is None or self.unseen_identities is None or self.validation_gmean is None:
            return None
        if self.held_out:
            return ("no validation identity was kept out of training, so the new-individual threshold was chosen "
                    "on trained identities held out of the gallery, which answers too many new animals as known "
                    "(README: Who is this, measured); pass --data.val_unseen_ratio 0.1")
        if self.unseen_identities >= SMALL_VALIDATION_IDENTITIES:
            return None
        return (f"only {self.unseen_identities} validation identities were kept out of training: the new-individual "
                f"threshold and the grouping cut rest on them and move with which animals they are (intervals "
                f"above), so the threshold is the best gmean averaged over +-{THRESHOLD_SMOOTHING:.0%} of the spread "
                "of the validation scores and the cut is the cosine that only "
                f"{1 - FEW_UNSEEN_CUT_QUANTILE[self.discovery_k is None]:.0%} of pairs of different validation animals "
                "reach (measured better than their best AMI on 35-animal catalogues); keep more animals out "
                "(--data.val_unseen_ratio) or review the answers (python -m reid_lightning.review)")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON values: the checkpoint entry and the content of ``threshold.json``."""
        return {"open_set_threshold": self.threshold, "score": self.score, "validation_gmean": self.validation_gmean,
                "held_out": self.held_out,
                "named_right": None if self.named_right is None else self.named_right.to_dict(),
                "new_right": None if self.new_right is None else self.new_right.to_dict(),
                "discovery_threshold": self.discovery_threshold, "discovery_k": self.discovery_k,
                "discovery_ami": self.discovery_ami, "threshold_interval": _listed(self.threshold_interval),
                "discovery_interval": _listed(self.discovery_interval), "unseen_identities": self.unseen_identities,
                "discovery_rule": self.discovery_rule, "discovery_join_cut": self.discovery_join_cut}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OpenSetModel:
        def calibration(entry):
            return None if entry is None else Calibration.from_dict(entry)

        return cls(threshold=data.get("open_set_threshold"), score=data.get("score", "score"),
                   validation_gmean=data.get("validation_gmean"), named_right=calibration(data.get("named_right")),
                   new_right=calibration(data.get("new_right")), held_out=data.get("held_out", ""),
                   discovery_threshold=data.get("discovery_threshold"),
                   discovery_k=data.get("discovery_k", DEFAULT_K), discovery_ami=data.get("discovery_ami"),
                   threshold_interval=_pair(data.get("threshold_interval")),
                   discovery_interval=_pair(data.get("discovery_interval")),
                   unseen_identities=data.get("unseen_identities"), discovery_rule=data.get("discovery_rule", ""),
                   discovery_join_cut=data.get("discovery_join_cut"))

    def save(self, path: str | Path) -> Path:
        """Write :meth:`to_dict` as JSON (``threshold.json``)."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=2))
        return path

    @classmethod
    def load(cls, path: str | Path) -> OpenSetModel:
        return cls.from_dict(json.loads(Path(path).read_text()))


SMALL_VALIDATION_IDENTITIES = 10
"""Fewer unknown validation identities than this make a small-catalogue choice (smoothed threshold, the cut at a
quantile of different animals' cosines, a caution)."""
FEW_UNSEEN_CUT_QUANTILE = {False: 0.8, True: 0.98}
"""With fewer than :data:`SMALL_VALIDATION_IDENTITIES` unknown validation identities, the discovery cut is the cosine
that only ``1 - q`` of the pairs of photos of different validation animals (known and unknown: hundreds of pairs,
where the handful of unknown animals gives few same-animal ones) reach: ``q`` keyed by "all pairs" (True) or a
top-k graph (False; its missing pairs count as -1 and pull the linkage down, so its cut sits lower). Measured on
zebra and ten 35-dog draws (docs/benchmarks.md, small catalogues): mean test ARI 0.774 on the top-10 graph
(0.767-0.778 for any q from 0.5 to 0.85) against 0.673 for the cut of the best validation AMI; on all pairs (six
of them) 0.698 for 0.98 against 0.693."""


def _between(interval: tuple[float, float] | None) -> str:
    return "" if interval is None else f" [{interval[0]:.4f}, {interval[1]:.4f}] ({LEVEL:.0%} over resampled identities)"


def _listed(interval: tuple[float, float] | None) -> list[float] | None:
    return None if interval is None else [float(interval[0]), float(interval[1])]


def _pair(values: list[float] | None) -> tuple[float, float] | None:
    return None if values is None else (float(values[0]), float(values[1]))


def fit_open_set(results: RetrievalResults, *, score: str, holdout: float = 0.2, seed: int = 0,
                 embeddings: Tensor | None = None, discovery_k: int | None | str = "auto") -> OpenSetModel:
    """Choose the threshold and fit the confidence calibration on labelled held-out queries (validation).

    The top-1 answers are read with :func:`decision_inputs`. Without unknown queries, ``holdout`` of the
    identities are removed from the gallery (:func:`held_out_gallery_identities`) so that their queries become
    unknown (in leave-one-out too: a removed identity's queries then have no image of their own left). The
    threshold is left None (with the reason in ``held_out``) when the queries are all known or all unknown even
    then; the calibration is fitted whenever there are answers of both kinds of correctness. Raises ValueError when
    fewer than 2 identities could be held out.
    """
    inputs, held_out = decision_inputs(results), ""
    if inputs["known"].all():
        try:
            keep = held_out_gallery_identities(query_labels=results.query_labels,
                                               gallery_labels=results.gallery_labels, fraction=holdout, seed=seed)
        except ValueError as error:
            return OpenSetModel(None, score, held_out=str(error))
        inputs = decision_inputs(results, keep_gallery=keep)
        held_out = (f"{len(torch.unique(results.gallery_labels.cpu()[~keep.cpu()]))} validation identities held "
                    "out of the gallery (no validation query was of an unknown identity)")
    threshold = gmean = None
    unseen = len(torch.unique(inputs["query_labels"][~inputs["known"]]))
    smoothing = smoothing_window(inputs["scores"]) if unseen < SMALL_VALIDATION_IDENTITIES else 0.0
    if inputs["known"].any() and not inputs["known"].all():
        threshold, gmean = choose_threshold(**inputs, smoothing=smoothing)
    elif not held_out:
        held_out = "no threshold: the validation queries are all known or all unknown"
    named_right, new_right = _fit_confidence(inputs)
    if discovery_k == "auto":
        discovery_k = _grouping_graph(inputs)
    cut, ami, cut_range, rule, join = _choose_cut(embeddings, inputs, discovery_k, seed) if embeddings is not None \
        else (None, None, None, "", None)
    interval = None if threshold is None else threshold_interval(inputs, smoothing=smoothing, seed=seed)
    return OpenSetModel(threshold, score, gmean, named_right, new_right, held_out, cut, discovery_k, ami,
                        threshold_interval=interval, discovery_interval=cut_range, unseen_identities=unseen,
                        discovery_rule=rule, discovery_join_cut=join)


def _grouping_graph(inputs: dict[str, Tensor]) -> int | None:
    """How new photos are grouped: on each photo's :data:`DEFAULT_K` nearest (robust when animals have few photos:
    dogfaces ARI 0.696 against 0.506 on all pairs), or on all pairs (None) when unknown validation identities with
    more photos than such a graph holds together (about ``2 k``) have at least a quarter of the unknown photos:
    new animals will have as many, and their groups would split."""
    labels = inputs["query_labels"][~inputs["known"]]
    if not len(labels):
        return DEFAULT_K
    counts = torch.unique(labels, return_counts=True)[1]
    in_big_groups = int(counts[counts > 2 * DEFAULT_K].sum())
    return None if in_big_groups >= 0.25 * len(labels) else DEFAULT_K


def _choose_cut(embeddings: Tensor, inputs: dict[str, Tensor], k: int | None, seed: int
                ) -> tuple[float | None, float | None, tuple[float, float] | None, str, float | None]:
    """The discovery cut, its AMI on the unknown queries (real, or made by holding identities out), its interval
    over resampled identities, when not chosen by AMI the rule (for people), and with a top-k graph the cut joining
    its groups on all pairs. The cut has the best AMI (on all pairs, ``k`` None: at or above
    :func:`different_identity_floor` of all the queries); with fewer than :data:`SMALL_VALIDATION_IDENTITIES`
    unknown identities it is that floor at :data:`FEW_UNSEEN_CUT_QUANTILE`. The join cut is the floor at
    :data:`DIFFERENT_FLOOR_QUANTILE` (joining never goes below the cut: :func:`group_new_photos`), kept with few
    unknown identities (measured: small catalogues' ARI 0.774 -> 0.795) and otherwise only where it raises their
    AMI (dogfaces: joining would lower the test ARI from 0.696 to 0.523)."""
    unknown = ~inputs["known"]
    labels = inputs["query_labels"][unknown].numpy()
    if int(unknown.sum()) < 3 or len(np.unique(labels)) < 2:
        return None, None, None, "", None
    everyone = embeddings.detach().float().cpu()
    everyone_labels = inputs["query_labels"].numpy()
    photos = everyone[unknown]
    graph = None if k is None else min(k, len(photos) - 1)
    few = len(np.unique(labels)) < SMALL_VALIDATION_IDENTITIES
    different = different_identity_floor(everyone, true_labels=everyone_labels)
    quantile = FEW_UNSEEN_CUT_QUANTILE[k is None] if few else DIFFERENT_FLOOR_QUANTILE
    floor = different if quantile == DIFFERENT_FLOOR_QUANTILE else different_identity_floor(
        everyone, true_labels=everyone_labels, quantile=quantile)
    rule = ""
    if few and floor is not None:
        cut, ami = floor, float(adjusted_mutual_info_score(labels, group_new_photos(photos, threshold=floor,
                                                                                      k=graph).groups))
        interval = floor_interval(everyone, true_labels=everyone_labels, quantile=quantile, seed=seed)
        rule = (f"the cosine only {1 - quantile:.0%} of pairs of different validation animals reach: "
                f"{len(np.unique(labels))} unknown validation identities are too few to choose on; ")
    else:
        lowest = floor if k is None else None  # a top-k graph with enough animals searches every cut
        cut, ami = choose_discovery_threshold(photos, true_labels=labels, k=graph, lowest=lowest)
        interval = cut_interval(photos, true_labels=labels, k=graph, lowest=lowest, seed=seed)
    join = None if k is None else different
    if join is not None and not few:  # enough unknown animals to check the joining on: kept only where it helps
        joined = group_new_photos(photos, threshold=cut, k=graph, join_threshold=join).groups
        if adjusted_mutual_info_score(labels, joined) <= ami:
            join = None
    return cut, ami, interval, rule, join


def _fit_confidence(inputs: dict[str, Tensor]) -> tuple[Calibration | None, Calibration | None]:
    scores = torch.nan_to_num(inputs["scores"], nan=-math.inf).clamp(min=-1e30).numpy()
    right = (inputs["known"] & (inputs["top1_labels"] == inputs["query_labels"])).numpy()
    new = (~inputs["known"]).numpy()
    if right.all() or not right.any() or new.all() or not new.any():
        return None, None
    return IsotonicCalibration().fit(scores, right), IsotonicCalibration().fit(-scores, new)


# ---------------------------------------------------------------------------------------------- logging
def answers_right(inputs: dict[str, Tensor], is_new: Tensor) -> Tensor:
    """(Q,) bool: the answer is right (a named answer names the query's identity; ``new`` for an unknown)."""
    named_right = inputs["known"] & (inputs["top1_labels"] == inputs["query_labels"])
    return torch.where(is_new, ~inputs["known"], named_right & ~is_new)


@dataclass(frozen=True)
class QueryDiscovery:
    """The proposed individuals among the queries of identities absent from the gallery.

    Attributes:
        queries: ``(N,)`` positions of those queries in the results.
        true_labels: ``(N,)`` their identity codes.
        discovery: their proposed groups.
    """

    queries: Tensor
    true_labels: Tensor
    discovery: Discovery


def discover_unknown_queries(results: RetrievalResults, model: OpenSetModel | None, embeddings: Tensor | None
                             ) -> QueryDiscovery | None:
    """Group the queries whose identity is not in the gallery (``embeddings (Q, D)``) at the model's discovery cut;
    None without a cut, embeddings or such queries."""
    if model is None or embeddings is None or results.query_labels is None:
        return None
    unknown = ~decision_inputs(results)["known"]
    grouped = model.group(embeddings.detach().cpu()[unknown])
    if grouped is None:
        return None
    return QueryDiscovery(unknown.nonzero().flatten(), results.query_labels.cpu()[unknown], grouped)


def open_set_log_values(results: RetrievalResults, model: OpenSetModel | None,
                        discovered: QueryDiscovery | None = None) -> dict[str, float]:
    """Everything logged about the open-set answers of labelled results: ``open/<metric>`` (BAKS, BAUS, gmean,
    ... when some queries are of identities absent from the gallery), ``confidence_ece`` (expected calibration
    error of the answers' confidence against their correctness, when the model is calibrated) and, with the
    grouping of the unknown queries (:func:`discover_unknown_queries`), ``discovery/<metric>`` (ARI, AMI, pairwise
    and B-cubed precision/recall/F1, count error)."""
    inputs = decision_inputs(results)
    values: dict[str, float] = {}
    threshold = None if model is None else model.threshold
    if not inputs["known"].all():
        values.update({f"open/{name}": value
                       for name, value in open_set_metrics(**inputs, threshold=threshold).items()
                       if not math.isnan(value)})
    if model is not None and threshold is not None and model.named_right is not None:
        is_new = model.is_new(inputs["scores"])
        confidence = model.confidence(inputs["scores"], is_new)
        values["confidence_ece"] = expected_calibration_error(confidence.numpy(),
                                                              answers_right(inputs, is_new).numpy())
    if discovered is not None:
        values.update({f"discovery/{name}": value for name, value in discovery_metrics(
            true_labels=discovered.true_labels.numpy(), proposed_labels=discovered.discovery.groups).items()})
    return values
