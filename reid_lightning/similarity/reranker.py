"""``PairwiseReranker``: WildFusion-style reranking of a retrieval shortlist with calibrated, fused pair scores."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from ..interrupt import label
from ..retrieval import RetrievalResults
from .calibration import Calibration, IsotonicCalibration, LogisticCalibration, reliability_diagram
from .fusion import FusionReport, FusionRule, MeanFusion, candidate_rules, choose_fusion
from .pair_scorer import PairScorer
from .widening import IdentityWidening

GLOBAL_SCORE = "global"
CALIBRATIONS = ("isotonic", "logistic")


class PairwiseReranker:
    """Re-sorts each query's top-``shortlist`` candidates by a fused, calibrated probability of a match.

    Every score type (the global embedding score, and each output of every :class:`PairScorer`) gets its own
    calibrator, fitted with :meth:`fit` on the shortlist pairs of held-out queries (e.g. validation), and the
    fusion rule is fitted there too (``fusion="auto"``: chosen among each score type alone, the mean and the
    logistic fusion by out-of-fold top-1 on those queries, see :mod:`~reid_lightning.similarity.fusion`; what was
    measured is in :attr:`fusion_report`). Calling the reranker scores the shortlist pairs, calibrates them, fuses
    them into one probability per pair and returns new :class:`RetrievalResults` with the shortlist re-sorted above
    the tail. No Lightning: works on any results and the two datasets behind them (query / gallery, same object
    in leave-one-out).
    """

    def __init__(self, scorers: Sequence[PairScorer] = (), shortlist: int = 20,
                 calibration: Literal["isotonic", "logistic"] = "isotonic", include_global: bool = True,
                 weights: Mapping[str, float] | None = None, progress: bool = True, fusion: str = "auto",
                 fusion_folds: int = 5, fusion_seed: int = 0, widening: IdentityWidening | None = None) -> None:
        """
        Args:
            scorers: local score types (extractor + matcher) computed for the shortlist pairs.
            shortlist: candidates per query (B) rescored; the rest keep their global order below them.
            calibration: ``isotonic`` or ``logistic`` calibration of every score type.
            include_global: fuse the calibrated global score with the local ones (WildFusion).
            weights: optional weight per score name for the ``mean`` fusion (missing names weigh 1).
            progress: show a progress bar over the scorers.
            fusion: ``auto`` (the rule with the best out-of-fold validation top-1, ties to the simpler: each score
                type alone < ``mean`` < ``logistic``), ``mean``, ``logistic``, or a score name (that type alone).
            fusion_folds: folds of validation queries for the out-of-fold comparison of the rules.
            fusion_seed: seed of the fold split.
            widening: a cheap local stage that fills the shortlist with the identities the first scorer finds
                (for a weak global model, see :class:`IdentityWidening`); :meth:`widen` applies it, :meth:`fit`
                and calling the reranker do so themselves.
        """
        if shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {shortlist}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"Unknown calibration {calibration!r}; choose one of {list(CALIBRATIONS)}")
        if not scorers and not include_global:
            raise ValueError("give at least one scorer (or include_global=True)")
        if widening is not None and not scorers:
            raise ValueError("widening the shortlist needs a local scorer: give scorers")
        if fusion_folds < 2:
            raise ValueError(f"fusion_folds must be at least 2, got {fusion_folds}")
        self.scorers = list(scorers)
        self.shortlist = shortlist
        self.calibration = calibration
        self.include_global = include_global
        self.weights = dict(weights or {})
        self.progress = progress
        self.calibrators: dict[str, Calibration] = {}
        self.fusion = fusion
        self.fusion_folds = fusion_folds
        self.fusion_seed = fusion_seed
        self.fusion_rule: FusionRule | None = None
        """The fitted fusion rule (None: the weighted mean of ``weights``, as before any fit)."""
        self.fusion_report: FusionReport | None = None
        """The rule kept and each candidate's out-of-fold validation top-1 (set by :meth:`fit_calibrators`)."""
        self.widening = widening

    # ------------------------------------------------------------------ scoring
    def _check(self, results: RetrievalResults, shortlist: int | None = None) -> int:
        shortlist = shortlist or self.shortlist
        if results.num_candidates < min(shortlist, results.gallery_labels.numel()):
            raise ValueError(
                f"the results hold {results.num_candidates} candidates per query but the shortlist is "
                f"{shortlist}: search with k >= {shortlist}"
            )
        return min(shortlist, results.num_candidates)

    def widen(self, results: RetrievalResults, query_dataset, gallery_dataset, *,
              query_positions: Tensor | None = None) -> RetrievalResults:
        """``results`` with the shortlist widened by :attr:`widening` (the same object without one)."""
        if self.widening is None:
            return results
        return results.promote(self.widened_shortlist(results, query_dataset, gallery_dataset,
                                                      query_positions=query_positions))

    def widened_shortlist(self, results: RetrievalResults, query_dataset, gallery_dataset, *,
                          query_positions: Tensor | None = None) -> Tensor:
        """``(Q, K)`` bool: the shortlist :attr:`widening` chooses, from the first scorer's scores of each query
        with its best-ranked images of every identity (``query_positions`` as in :meth:`pair_scores`)."""
        if self.widening is None:
            raise RuntimeError("this reranker has no widening")
        representatives = self.widening.representatives(results)
        candidates = results.candidate_indices.cpu()
        rows = torch.arange(len(candidates)) if query_positions is None else torch.as_tensor(query_positions).cpu()
        pairs = torch.stack([rows[:, None].expand_as(candidates)[representatives], candidates[representatives]], dim=1)
        scored = self.scorers[0].score(query_dataset, gallery_dataset, pairs)
        name = self.widening.score or next(iter(scored))
        if name not in scored:
            raise ValueError(f"widening ranks identities by {name!r}, which the first scorer does not return: "
                             f"choose one of {sorted(scored)}")
        values = torch.full(candidates.shape, float("nan"))
        values[representatives] = scored[name].float().cpu()
        return self.widening.shortlist_mask(results, values, shortlist=self.shortlist)

    def pair_scores(self, results: RetrievalResults, query_dataset, gallery_dataset,
                    query_positions: Tensor | None = None, shortlist: int | None = None) -> dict[str, Tensor]:
        """Every score type of the shortlist pairs, each ``(Q, B)`` float32 (NaN: not scored or empty slot).

        ``query_positions (Q,)``: the dataset index of each results row (default: row i is query i);
        ``shortlist``: B for this call (default: the reranker's), e.g. the neighbours of a grouping graph.
        """
        shortlist = self._check(results, shortlist)
        candidates = results.candidate_indices[:, :shortlist].cpu()
        valid = candidates >= 0
        rows = torch.arange(len(candidates)) if query_positions is None else torch.as_tensor(query_positions).cpu()
        pairs = torch.stack([rows[:, None].expand_as(candidates)[valid], candidates[valid]], dim=1)
        scores: dict[str, Tensor] = {}
        if self.include_global:
            scores[GLOBAL_SCORE] = results.candidate_scores[:, :shortlist].float().cpu().masked_fill(~valid, np.nan)
        # the progress bars of the scorers' loops are named after the caller's phase, e.g. ``test: LightGlue pairs``
        # (``with reid_lightning.interrupt.interruptible("test"): ...``), whose signals stop them between batches
        for scorer in tqdm(self.scorers, desc=label("pair scorers"),
                           disable=not self.progress or len(self.scorers) < 2, leave=False):
            for name, values in scorer.score(query_dataset, gallery_dataset, pairs).items():
                full = torch.full(candidates.shape, float("nan"))
                full[valid] = values.float().cpu()
                scores[name] = full
        return scores

    def calibrate(self, scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Calibrated probabilities of every score type, ``(Q, B)`` float64 each (NaN stays NaN)."""
        missing = sorted(set(scores) - set(self.calibrators))
        if missing:
            raise RuntimeError(f"no calibrator fitted for {missing}: call fit() (or load()) first")
        return self._calibrated(self.calibrators, scores)

    def fuse(self, probabilities: Mapping[str, Tensor]) -> Tensor:
        """The fused probability of a match in [0, 1], ``(Q, B)`` float64 (NaN: no score type scored the pair),
        by the fitted :attr:`fusion_rule` (before any fit: the weighted mean of the available probabilities).

        ``probabilities``: :meth:`calibrate`'s ``(Q, B)`` per score type, columns in global rank order."""
        rule = self.fusion_rule if self.fusion_rule is not None else MeanFusion(self.weights)
        return rule(probabilities)

    def rerank(self, results: RetrievalResults, probabilities: Mapping[str, Tensor]) -> RetrievalResults:
        """Results with the shortlist re-sorted by the fused ``probabilities`` (from :meth:`calibrate`)."""
        return results.rerank(self.fuse(probabilities))

    def __call__(self, results: RetrievalResults, query_dataset, gallery_dataset) -> RetrievalResults:
        """Widen the shortlist (with :attr:`widening`), score, calibrate and fuse its pairs; the reranked results
        (``results`` is unchanged)."""
        results = self.widen(results, query_dataset, gallery_dataset)
        return self.rerank(results, self.calibrate(self.pair_scores(results, query_dataset, gallery_dataset)))

    # ------------------------------------------------------------------ fitting
    def fit(self, results: RetrievalResults, query_dataset, gallery_dataset, *, max_queries: int | None = None,
            seed: int = 0) -> PairwiseReranker:
        """Fit one calibrator per score type on the shortlist pairs of held-out queries with known identities.

        Args:
            results: retrieval results of held-out queries (never the ones to be reranked), with query labels.
            max_queries: use at most this many queries (a seeded random subset).
        """
        subset, scores = self.fit_scores(results, query_dataset, gallery_dataset, max_queries=max_queries, seed=seed)
        return self.fit_calibrators(scores, hits=subset.hits)

    def fit_scores(self, results: RetrievalResults, query_dataset, gallery_dataset, *, max_queries: int | None = None,
                   seed: int = 0) -> tuple[RetrievalResults, dict[str, Tensor]]:
        """The queries :meth:`fit` uses (at most ``max_queries``, a seeded random subset; their shortlists widened
        with :attr:`widening`) and their pair scores."""
        keep = self.calibration_subset(results.num_queries, max_queries=max_queries, seed=seed)
        subset = self.widen(results.select(keep), query_dataset, gallery_dataset, query_positions=keep)
        return subset, self.pair_scores(subset, query_dataset, gallery_dataset, query_positions=keep)

    @staticmethod
    def calibration_subset(num_queries: int, *, max_queries: int | None = None, seed: int = 0) -> Tensor:
        """Positions of the queries :meth:`fit` uses: all, or a seeded random ``max_queries`` of them (sorted)."""
        if max_queries is None or num_queries <= max_queries:
            return torch.arange(num_queries)
        generator = torch.Generator().manual_seed(seed)
        return torch.randperm(num_queries, generator=generator)[:max_queries].sort().values

    def fit_calibrators(self, scores: Mapping[str, Tensor], *, hits: Tensor) -> PairwiseReranker:
        """Fit one calibrator per score type on ``(Q, B)`` pair scores and ``hits (Q, >= B)`` of their pairs, then
        the fusion rule: with ``fusion="auto"`` the global score (the first score type), replaced by a better
        local score alone and then by a fusion only where each wins by more than the out-of-fold noise on these
        queries, or by a fusion as good as both where the noise cannot tell the local score from the global one
        (:func:`~reid_lightning.similarity.fusion.choose_fusion`, :attr:`fusion_report`), refitted on all of them."""
        hits = hits[:, : next(iter(scores.values())).shape[1]].cpu()
        self.calibrators = self._fitted_calibrators(scores, hits)
        rules = candidate_rules(list(scores), self.weights)
        names = [rule.name for rule in rules]
        if self.fusion != "auto" and self.fusion not in names:
            raise ValueError(f"fusion={self.fusion!r} is neither 'auto' nor one of {names}")

        def fit_on(train_scores: Mapping[str, Tensor], train_hits: Tensor):
            calibrators = self._fitted_calibrators(train_scores, train_hits)
            return lambda values: self._calibrated(calibrators, values)

        report = choose_fusion(scores, hits, rules, fit_on, folds=self.fusion_folds, seed=self.fusion_seed,
                               baselines=list(scores))
        if self.fusion != "auto":
            report = FusionReport(chosen=self.fusion, top1=report.top1, folds=report.folds, queries=report.queries,
                                  reason=f"{self.fusion}: fixed (fusion={self.fusion!r})")
        rule = rules[names.index(report.chosen)]
        self.fusion_rule = rule.fit(self.calibrate(scores), hits)
        self.fusion_report = report
        return self

    def _fitted_calibrators(self, scores: Mapping[str, Tensor], hits: Tensor) -> dict[str, Calibration]:
        """One calibrator per score type fitted on its scored ``(Q, B)`` pairs."""
        calibrators = {}
        for name, values in scores.items():
            scored = ~torch.isnan(values)
            calibrator = IsotonicCalibration() if self.calibration == "isotonic" else LogisticCalibration()
            calibrators[name] = calibrator.fit(values[scored].double().numpy(), hits[scored].numpy())
        return calibrators

    @staticmethod
    def _calibrated(calibrators: Mapping[str, Calibration], scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
        return {name: torch.as_tensor(calibrators[name].predict(values.double().numpy()))
                for name, values in scores.items()}

    def save(self, folder: str | Path) -> Path:
        """Write the calibrators (one JSON each) and ``index.json`` (names, weights, shortlist, the fitted fusion
        rule and its report) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = {}
        for name, calibrator in self.calibrators.items():
            filename = file_name(name) + ".json"
            calibrator.save(folder / filename)
            index[name] = filename
        settings = {"shortlist": self.shortlist, "calibration": self.calibration,
                    "include_global": self.include_global, "weights": self.weights, "calibrators": index,
                    "fusion": None if self.fusion_rule is None else self.fusion_rule.to_dict(),
                    "fusion_report": None if self.fusion_report is None else self.fusion_report.to_dict(),
                    "widening": None if self.widening is None else self.widening.settings()}
        (folder / "index.json").write_text(json.dumps(settings, indent=2))
        return folder

    def load(self, folder: str | Path) -> PairwiseReranker:
        """Read calibrators, weights and the fusion rule saved by :meth:`save` (the saved rule is used whatever
        ``fusion`` says; folders saved before fusion rules fuse by the weighted mean); the scorers stay the ones
        given to ``__init__``.

        Raises ValueError when the saved calibrators are of another calibration, or of score types these scorers
        (and ``include_global``) do not produce."""
        folder = Path(folder)
        index_path = folder / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"{index_path} does not exist: give the folder PairwiseReranker.save wrote")
        settings = json.loads(index_path.read_text())
        problems = self._incompatibilities(settings)
        if problems:
            raise ValueError(f"the calibrators in {folder} do not fit this reranker: {'; '.join(problems)}")
        self.weights = dict(settings.get("weights", {}))
        self.calibrators = {name: Calibration.load(folder / filename)
                            for name, filename in settings["calibrators"].items()}
        fusion, report = settings.get("fusion"), settings.get("fusion_report")
        self.fusion_rule = None if fusion is None else FusionRule.from_dict(fusion)
        self.fusion_report = None if report is None else FusionReport.from_dict(report)
        return self

    def _incompatibilities(self, settings: dict) -> list[str]:
        """How saved ``index.json`` settings differ from this reranker's calibration and score types."""
        problems = []
        if settings.get("calibration") != self.calibration:
            problems.append(f"calibration {settings.get('calibration')!r} saved, {self.calibration!r} here")
        saved = set(settings.get("calibrators", {}))
        fusion = settings.get("fusion")
        if fusion is not None:
            try:
                needed = set(FusionRule.from_dict(fusion).score_names)
            except (TypeError, ValueError, KeyError) as error:
                problems.append(f"unreadable fusion rule ({error})")
            else:
                if needed - saved:
                    problems.append(f"the fusion rule reads {sorted(needed - saved)}, which have no calibrator")
        widening = None if self.widening is None else self.widening.settings()
        if settings.get("widening") != widening:
            problems.append(f"fitted on shortlists widened by {settings.get('widening')}, widened by {widening} here")
        if (GLOBAL_SCORE in saved) != self.include_global:
            problems.append(f"include_global={GLOBAL_SCORE in saved} saved, {self.include_global} here")
        names = [getattr(scorer, "name", None) for scorer in self.scorers]
        if None in names:  # a scorer without a name: its score names cannot be checked before scoring
            return problems

        def produced_by(score: str, scorer: str) -> bool:  # a PairScorer's names: "<name>" or "<name>@<output>"
            return score == scorer or score.startswith(f"{scorer}@")

        local = sorted(saved - {GLOBAL_SCORE})
        foreign = [score for score in local if not any(produced_by(score, name) for name in names)]
        missing = [name for name in names if not any(produced_by(score, name) for score in local)]
        if foreign or missing:
            problems.append(f"saved score types {local}, scorers here {names}")
        return problems

    # ------------------------------------------------------------------ reporting
    @staticmethod
    def calibration_errors(probabilities: Mapping[str, Tensor], hits: Tensor, folder: Path | None = None
                           ) -> dict[str, float]:
        """Expected calibration error of every calibrated score type against ``hits (Q, B)``; with ``folder``,
        one reliability diagram per type is saved there as PNG."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        errors = {}
        for name, probability in probabilities.items():
            scored = ~torch.isnan(probability)
            if not scored.any():
                continue
            figure, ax = plt.subplots(figsize=(4, 4))
            errors[name] = reliability_diagram(probability[scored].numpy(), hits[scored].numpy(), ax=ax,
                                               title=name)
            if folder is not None:
                folder.mkdir(parents=True, exist_ok=True)
                figure.savefig(folder / f"reliability_{file_name(name)}.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
        return errors


def file_name(name: str) -> str:
    """A score name as a safe file name."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
