"""Fusion rules: one match probability per shortlist pair from the calibrated probabilities of every score type.

A rule takes ``{score name: (Q, B)}`` calibrated probabilities (NaN: pair not scored by that type) whose columns
are each query's shortlist in global rank order, and returns ``(Q, B)`` fused probabilities in [0, 1] (NaN where no
score type scored the pair). Candidates, simplest first (ties in the out-of-fold selection go to the simpler):

* :class:`SingleScore`: one score type alone (the global score, or one local score);
* :class:`MeanFusion`: (weighted) mean of the available probabilities (WildFusion);
* :class:`LogisticFusion`: logistic regression over the probabilities, their log-odds, their gap to the query's
  best of that type and the global rank (a learned fusion; its output is a probability by construction).

:func:`choose_fusion` measures each candidate's top-1 after reranking out of fold (queries split into folds,
calibrators and rule fitted on the other folds) so that the kept rule is never below the better single part on
validation; given ``baselines`` (each score type alone, the global score first), a rule replaces the global score,
and a fusion the single score kept, only when it wins by more than the out-of-fold noise (the paired count of
queries it gains and loses); where a local score looks better than the global one but within that noise, their
fusion is kept when it is at least as good as both. Rules are saved as JSON (``to_dict`` / :meth:`FusionRule.from_dict`), never pickled.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from scipy.special import expit, logit
from sklearn.linear_model import LogisticRegression
from torch import Tensor

Probabilities = Mapping[str, Tensor]


def _stack(probabilities: Probabilities, names: Sequence[str]) -> np.ndarray:
    """``(Q, B, S)`` float64 of the score types ``names`` (in that order)."""
    missing = [name for name in names if name not in probabilities]
    if missing:
        raise KeyError(f"the fusion rule needs the score types {missing}, got {sorted(probabilities)}")
    return np.stack([torch.as_tensor(probabilities[name]).double().cpu().numpy() for name in names], axis=-1)


def _unscored(values: np.ndarray) -> np.ndarray:
    """``(Q, B)`` bool: no score type scored the pair (empty slot, or every scorer failed)."""
    return np.isnan(values).all(axis=-1)


class FusionRule(ABC):
    """Base class: ``fit(probabilities, hits)`` on validation pairs, then ``rule(probabilities) -> (Q, B)``."""

    registry: ClassVar[dict[str, type[FusionRule]]] = {}
    complexity: ClassVar[int] = 0
    """Order of preference between rules of equal validation top-1: lower is simpler, kept first."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        FusionRule.registry[cls.__name__] = cls

    @property
    @abstractmethod
    def name(self) -> str:
        """The rule's name in reports and in ``PairwiseReranker(fusion=...)``."""

    @property
    @abstractmethod
    def score_names(self) -> list[str]:
        """The score types the rule reads (empty: whatever it is given)."""

    def fit(self, probabilities: Probabilities, hits: Tensor) -> FusionRule:
        """Fit on ``(Q, B)`` calibrated probabilities and ``hits (Q, B)`` of the same pairs; returns self."""
        return self

    @abstractmethod
    def __call__(self, probabilities: Probabilities) -> Tensor:
        """Fused probabilities ``(Q, B)`` float64 in [0, 1]; NaN where no score type scored the pair."""

    def params(self) -> dict[str, Any]:
        """The ``__init__`` arguments, as JSON-compatible values."""
        return {}

    def state(self) -> dict[str, Any] | None:
        """Fitted parameters, JSON-compatible (None: nothing fitted)."""
        return None

    def _set_state(self, state: dict[str, Any]) -> None:
        pass

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible description: type, ``__init__`` arguments and fitted state."""
        return {"type": type(self).__name__, "params": self.params(), "state": copy.deepcopy(self.state())}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> FusionRule:
        """Rebuild a rule written by :meth:`to_dict`."""
        kind = data.get("type")
        if kind not in FusionRule.registry:
            raise ValueError(f"unknown fusion rule {kind!r}; known: {sorted(FusionRule.registry)}")
        rule = FusionRule.registry[kind](**data.get("params", {}))
        if data.get("state") is not None:
            rule._set_state(copy.deepcopy(dict(data["state"])))
        return rule


class SingleScore(FusionRule):
    """One score type alone: its calibrated probability is the fused one (the other types are ignored)."""

    complexity = 0

    def __init__(self, score: str) -> None:
        self.score = score

    @property
    def name(self) -> str:
        return self.score

    @property
    def score_names(self) -> list[str]:
        return [self.score]

    def params(self) -> dict[str, Any]:
        return {"score": self.score}

    def __call__(self, probabilities: Probabilities) -> Tensor:
        return torch.from_numpy(_stack(probabilities, [self.score])[..., 0].copy())


class MeanFusion(FusionRule):
    """Weighted mean of the probabilities available for each pair (WildFusion); missing names weigh 1."""

    complexity = 1

    def __init__(self, weights: Mapping[str, float] | None = None) -> None:
        self.weights = dict(weights or {})

    @property
    def name(self) -> str:
        return "mean"

    @property
    def score_names(self) -> list[str]:
        return []

    def params(self) -> dict[str, Any]:
        return {"weights": dict(self.weights)}

    def __call__(self, probabilities: Probabilities) -> Tensor:
        total = weight_sum = None
        for name, probability in probabilities.items():
            weight = float(self.weights.get(name, 1.0))
            probability = torch.as_tensor(probability).double()
            available = ~torch.isnan(probability)
            term = torch.where(available, probability * weight, 0.0)
            used = available.double() * weight
            total = term if total is None else total + term
            weight_sum = used if weight_sum is None else weight_sum + used
        if total is None:
            raise ValueError("nothing to fuse: no score type given")
        return torch.where(weight_sum > 0, total / weight_sum.clamp(min=1e-12), float("nan"))


class LogisticFusion(FusionRule):
    """Logistic regression (scikit-learn, L2) on cheap pair features; the output is a probability.

    Features of a pair, for every score type ``s`` (a missing probability is replaced by the mean of ``s`` on the
    fitted pairs): the probability ``p_s``, its log-odds (clipped to ``[eps, 1 - eps]``), and its gap to the
    query's best ``p_s`` in the shortlist (``p_s - max_j p_s[q, j]``, <= 0); plus ``log(1 + rank)`` of the pair's
    global rank in the shortlist (its column). Two confidence levels of one matcher (``CollectCounts(thresholds=
    [0.5, 0.8])``) are two score types, so each gets its own weight. Features are standardised with the fitted
    mean and scale. Log-odds make the model a weighted naive-Bayes combination of the parts; gaps and rank let it
    use how a candidate compares with the rest of its shortlist.
    """

    complexity = 2
    eps = 1e-4

    def __init__(self, C: float = 1.0) -> None:
        """
        Args:
            C: inverse regularisation strength of scikit-learn's ``LogisticRegression``.
        """
        if C <= 0:
            raise ValueError(f"C must be > 0, got {C}")
        self.C = C
        self._state: dict[str, Any] | None = None

    @property
    def name(self) -> str:
        return "logistic"

    @property
    def score_names(self) -> list[str]:
        return [] if self._state is None else list(self._state["names"])

    def params(self) -> dict[str, Any]:
        return {"C": self.C}

    def state(self) -> dict[str, Any] | None:
        return self._state

    def _set_state(self, state: dict[str, Any]) -> None:
        self._state = state

    def _features(self, values: np.ndarray, fill: np.ndarray) -> np.ndarray:
        """``(Q, B, S)`` probabilities -> ``(Q, B, 3 S + 1)`` raw features."""
        filled = np.where(np.isnan(values), fill, values)
        log_odds = logit(np.clip(filled, self.eps, 1 - self.eps))
        # the best candidate of the query's shortlist; empty slots (nothing scored) are no candidate
        best = np.where(_unscored(values)[..., None], -np.inf, filled).max(axis=1, keepdims=True)
        gap = filled - np.where(np.isfinite(best), best, filled)
        rank = np.broadcast_to(np.log1p(np.arange(values.shape[1], dtype=np.float64))[None, :, None],
                               (*values.shape[:2], 1))
        return np.concatenate([filled, log_odds, gap, rank], axis=-1)

    def fit(self, probabilities: Probabilities, hits: Tensor) -> LogisticFusion:
        names = sorted(probabilities)
        values = _stack(probabilities, names)
        hits = torch.as_tensor(hits)[:, : values.shape[1]].cpu().numpy().astype(bool)
        scored = ~_unscored(values)
        if hits[scored].all() or not hits[scored].any():
            raise ValueError("the logistic fusion needs matching and non-matching scored pairs")
        with np.errstate(invalid="ignore"):  # all-NaN score types are rejected just below
            fill = np.nanmean(values[scored], axis=0)
        if np.isnan(fill).any():
            raise ValueError(f"score types {[n for n, f in zip(names, fill) if np.isnan(f)]} scored no pair")
        features = self._features(values, fill)[scored]
        mean, scale = features.mean(axis=0), features.std(axis=0)
        scale = np.where(scale > 0, scale, 1.0)  # a constant feature (e.g. a shortlist of 1) stays 0
        model = LogisticRegression(C=self.C, max_iter=1000)
        model.fit((features - mean) / scale, hits[scored].astype(int))
        self._state = {"names": names, "fill": fill.tolist(), "mean": mean.tolist(), "scale": scale.tolist(),
                       "coef": model.coef_[0].tolist(), "intercept": float(model.intercept_[0])}
        return self

    def __call__(self, probabilities: Probabilities) -> Tensor:
        if self._state is None:
            raise RuntimeError("LogisticFusion is not fitted: call fit(probabilities, hits) first")
        state = self._state
        values = _stack(probabilities, state["names"])
        features = (self._features(values, np.asarray(state["fill"])) - np.asarray(state["mean"])) / np.asarray(
            state["scale"])
        fused = expit(features @ np.asarray(state["coef"]) + state["intercept"])
        return torch.from_numpy(np.where(_unscored(values), np.nan, fused))


RULES: dict[str, Callable[[], FusionRule]] = {"mean": MeanFusion, "logistic": LogisticFusion}
"""The fusions of several score types, by name (``PairwiseReranker(fusion=...)``); a score name is a rule too."""


def candidate_rules(score_names: Sequence[str], weights: Mapping[str, float] | None = None,
                    fusions: Sequence[str] = ("mean", "logistic")) -> list[FusionRule]:
    """Unfitted candidates, simplest first: each score type alone, then the ``fusions`` (``mean`` with
    ``weights``)."""
    clash = sorted(set(score_names) & set(RULES))
    if clash:
        raise ValueError(f"score types may not be named like fusion rules: {clash}")
    rules: list[FusionRule] = [SingleScore(name) for name in score_names]
    for fusion in fusions:
        rules.append(MeanFusion(weights) if fusion == "mean" else RULES[fusion]())
    return sorted(rules, key=lambda rule: rule.complexity)  # stable: score types keep their order


def reranked_top1(fused: Tensor, hits: Tensor) -> Tensor:
    """``(Q,)`` bool: the pair ranked first by ``fused (Q, B)`` is a hit (``hits (Q, >= B)``).

    Same order as :meth:`RetrievalResults.rerank`: float32 scores, ties and unscored (NaN) pairs in global order.
    """
    key = torch.as_tensor(fused).float().nan_to_num(nan=float("-inf"))
    first = torch.sort(key, dim=1, descending=True, stable=True).indices[:, 0]
    return torch.as_tensor(hits)[:, : key.shape[1]].cpu().gather(1, first[:, None].cpu())[:, 0].bool()


@dataclass(frozen=True)
class FusionReport:
    """What the out-of-fold selection measured.

    Attributes:
        chosen: name of the rule kept (a score type, ``mean``, ``logistic``).
        top1: out-of-fold validation top-1 after reranking by each candidate rule, simplest first (empty when no
            fold could be evaluated).
        folds: folds evaluated (folds whose training queries cannot fit a calibrator are skipped).
        queries: held-out queries behind ``top1``.
        reason: why ``chosen`` was kept, for people.
    """

    chosen: str
    top1: dict[str, float]
    folds: int
    queries: int
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FusionReport:
        return cls(chosen=data["chosen"], top1=dict(data["top1"]), folds=int(data["folds"]),
                   queries=int(data["queries"]), reason=data.get("reason", ""))


NOISE_Z = 1.645
"""A rule replaces the baseline when its net gain of queries exceeds ``NOISE_Z * sqrt(gained + lost)``: the
one-sided 95 % level of the sign test on the queries where the two disagree (normal approximation)."""


CalibrateFit = Callable[[Probabilities, Tensor], Callable[[Probabilities], dict[str, Tensor]]]
"""Fits calibrators on ``(scores, hits)`` and returns the function mapping raw scores to probabilities."""


def query_folds(num_queries: int, folds: int, seed: int = 0) -> list[Tensor]:
    """Query positions split into ``min(folds, num_queries)`` seeded random folds of near-equal size."""
    order = torch.randperm(num_queries, generator=torch.Generator().manual_seed(seed))
    return [fold.sort().values for fold in order.tensor_split(min(folds, num_queries)) if len(fold)]


def out_of_fold_hits(scores: Probabilities, hits: Tensor, rules: Sequence[FusionRule], fit_calibrators: CalibrateFit,
                     *, folds: int = 5, seed: int = 0) -> tuple[dict[str, Tensor], Tensor, int]:
    """Top-1 hits of each rule on held-out queries: for each fold, calibrators and rules are fitted on the other
    folds' pairs and the fold is reranked. ``scores``: raw ``(Q, B)`` per type, ``hits (Q, >= B)``.

    Returns ``({rule name: (Q,) bool reranked top-1 is a hit}, (Q,) bool evaluated, folds evaluated)``; a fold
    whose training part cannot fit the calibrators or a rule (e.g. no matching pair) is skipped for every rule
    (its queries are not evaluated).
    """
    num_queries = next(iter(scores.values())).shape[0]
    top1 = {rule.name: torch.zeros(num_queries, dtype=torch.bool) for rule in rules}
    evaluated = torch.zeros(num_queries, dtype=torch.bool)
    used_folds = 0
    for held in query_folds(num_queries, folds, seed):
        train = torch.ones(num_queries, dtype=torch.bool)
        train[held] = False
        if not train.any():
            continue
        train_scores = {name: values[train] for name, values in scores.items()}
        held_scores = {name: values[held] for name, values in scores.items()}
        try:
            calibrate = fit_calibrators(train_scores, hits[train])
            train_probabilities, held_probabilities = calibrate(train_scores), calibrate(held_scores)
            fitted = [copy.deepcopy(rule).fit(train_probabilities, hits[train]) for rule in rules]
        except ValueError:  # too few queries on this side (no matching or no non-matching pair)
            continue
        for rule in fitted:
            top1[rule.name][held] = reranked_top1(rule(held_probabilities), hits[held])
        evaluated[held] = True
        used_folds += 1
    return top1, evaluated, used_folds


def choose_fusion(scores: Probabilities, hits: Tensor, rules: Sequence[FusionRule], fit_calibrators: CalibrateFit,
                  *, folds: int = 5, seed: int = 0, fallback: str = "mean", baselines: Sequence[str] = ()
                  ) -> FusionReport:
    """The rule with the best out-of-fold top-1 (:func:`out_of_fold_hits`); ties go to the simpler (earlier in
    ``rules``, which :func:`candidate_rules` sorts simplest first). With ``baselines`` (rule names of each score
    type alone, the reference first: the global score), a rule only replaces another when its net gain of held-out
    queries over it exceeds the noise (:data:`NOISE_Z`): first the best other single score replaces the reference,
    then the best fusion replaces the single score kept. When the best other single score is better than the
    reference but within the noise, the two cannot be told apart, and the best fusion is kept if it is at least as
    good as both (a hedge between them). Without any evaluable fold, ``fallback``."""
    top1, evaluated, used_folds = out_of_fold_hits(scores, hits, rules, fit_calibrators, folds=folds, seed=seed)
    if not used_folds:
        return FusionReport(chosen=fallback, top1={}, folds=0, queries=0,
                            reason=f"{fallback}: no fold could be evaluated")
    counts = {name: int(values[evaluated].sum()) for name, values in top1.items()}
    used_queries = int(evaluated.sum())
    ranked = [rule.name for rule in sorted(rules, key=lambda rule: (-counts[rule.name], rule.complexity))]
    percent = {name: f"{counts[name]} of {used_queries}" for name in counts}
    if not any(name in baselines for name in ranked):
        return FusionReport(chosen=ranked[0], folds=used_folds, queries=used_queries,
                            reason=f"{ranked[0]}: the best out-of-fold top-1 ({percent[ranked[0]]} queries)",
                            top1={name: counts[name] / used_queries for name in counts})

    def replaces(challenger: str, incumbent: str) -> tuple[bool, str]:
        gained = int((top1[challenger] & ~top1[incumbent] & evaluated).sum())
        lost = int((~top1[challenger] & top1[incumbent] & evaluated).sum())
        noise = NOISE_Z * math.sqrt(gained + lost)
        verdict = "above" if gained - lost > noise else "within"
        return gained - lost > noise, (f"{challenger} {gained - lost:+d} queries out of fold against {incumbent} "
                                       f"({gained} gained, {lost} lost), {verdict} the noise {noise:.1f}")

    reference = next(name for name in baselines if name in counts)
    kept, steps, undecided = reference, [], None
    single = next((name for name in ranked if name in baselines and name != kept), None)
    if single is not None and counts[single] > counts[kept]:
        better, step = replaces(single, kept)
        steps.append(step)
        kept, undecided = (single, None) if better else (kept, single)
    fusion = next((name for name in ranked if name not in baselines), None)
    if fusion is not None and undecided is not None and counts[fusion] >= counts[undecided]:
        steps.append(f"{fusion} as good out of fold as both ({counts[fusion]} queries), which the noise cannot tell "
                     "apart: fused")
        kept = fusion
    elif fusion is not None and counts[fusion] > counts[kept]:
        better, step = replaces(fusion, kept)
        steps.append(step)
        kept = fusion if better else kept
    reason = f"{kept} ({percent[kept]} queries out of fold)" + (": " + "; ".join(steps) if steps else
                                                                 f": no rule above {reference}")
    return FusionReport(chosen=kept, folds=used_folds, queries=used_queries, reason=reason,
                        top1={name: counts[name] / used_queries for name in counts})


def fusion_ceiling(scores: Probabilities, hits: Tensor, *, chunk: int | None = None) -> float:
    """The best reranked top-1 that any fusion increasing in every score type could reach on these shortlists.

    A query counts when one of its matching pairs is dominated by no non-matching pair of its shortlist: a
    non-matching pair at least as high on every score type (NaN: lowest) beats the matching one under any such
    fusion when it is higher on one type, or ties everywhere and comes first in global order (ties keep it). The
    bound is per query (each query may pick its own fusion), so no single rule fitted on validation exceeds it.

    Args:
        scores: ``{name: (Q, B)}`` raw or calibrated pair scores (calibration is monotone: same bound), columns in
            global rank order; slots no type scored are no candidates.
        hits: ``(Q, >= B)`` bool, pair of the query's identity.
        chunk: queries compared at once (default: about 2**26 pair comparisons per block).
    """
    values = torch.stack([torch.as_tensor(v).double().cpu() for v in scores.values()], dim=-1)  # (Q, B, S)
    slots = values.shape[1]
    present = ~torch.isnan(values).all(dim=-1)
    values = values.nan_to_num(nan=float("-inf"))
    hits = torch.as_tensor(hits)[:, :slots].cpu().bool() & present
    negatives = ~hits & present
    earlier = torch.ones(slots, slots, dtype=torch.bool).tril(-1)  # [p, n]: n comes before p in global order
    chunk = chunk or max(1, 2**26 // (slots * slots * values.shape[-1] or 1))
    reached = 0
    for start in range(0, len(values), chunk):
        block = values[start:start + chunk]
        at_least = (block[:, None, :, :] >= block[:, :, None, :]).all(dim=-1)  # [q, p, n]: n >= p on every type
        higher = (block[:, None, :, :] > block[:, :, None, :]).any(dim=-1)
        beaten = at_least & (higher | earlier) & negatives[start:start + chunk, None, :]
        reached += int((hits[start:start + chunk] & ~beaten.any(dim=-1)).any(dim=-1).sum())
    return reached / len(values)
