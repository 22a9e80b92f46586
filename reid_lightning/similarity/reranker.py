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
from .pair_scorer import PairScorer

GLOBAL_SCORE = "global"
CALIBRATIONS = ("isotonic", "logistic")


class PairwiseReranker:
    """Re-sorts each query's top-``shortlist`` candidates by a fused, calibrated probability of a match.

    Every score type (the global embedding score, and each output of every :class:`PairScorer`) gets its own
    calibrator, fitted with :meth:`fit` on the shortlist pairs of held-out queries (e.g. validation). Calling the
    reranker scores the shortlist pairs, calibrates them, fuses them (weighted mean of the available
    probabilities) and returns new :class:`RetrievalResults` with the shortlist re-sorted above the tail. No
    Lightning: works on any results and the two datasets behind them (query / gallery, same object in
    leave-one-out).
    """

    def __init__(self, scorers: Sequence[PairScorer] = (), shortlist: int = 20,
                 calibration: Literal["isotonic", "logistic"] = "isotonic", include_global: bool = True,
                 weights: Mapping[str, float] | None = None, progress: bool = True) -> None:
        """
        Args:
            scorers: local score types (extractor + matcher) computed for the shortlist pairs.
            shortlist: candidates per query (B) rescored; the rest keep their global order below them.
            calibration: ``isotonic`` or ``logistic`` calibration of every score type.
            include_global: fuse the calibrated global score with the local ones (WildFusion).
            weights: optional fusion weight per score name (missing names weigh 1).
            progress: show a progress bar over the scorers.
        """
        if shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {shortlist}")
        if calibration not in CALIBRATIONS:
            raise ValueError(f"Unknown calibration {calibration!r}; choose one of {list(CALIBRATIONS)}")
        if not scorers and not include_global:
            raise ValueError("give at least one scorer (or include_global=True)")
        self.scorers = list(scorers)
        self.shortlist = shortlist
        self.calibration = calibration
        self.include_global = include_global
        self.weights = dict(weights or {})
        self.progress = progress
        self.calibrators: dict[str, Calibration] = {}

    # ------------------------------------------------------------------ scoring
    def _check(self, results: RetrievalResults) -> int:
        if results.num_candidates < min(self.shortlist, results.gallery_labels.numel()):
            raise ValueError(
                f"the results hold {results.num_candidates} candidates per query but the shortlist is "
                f"{self.shortlist}: search with k >= {self.shortlist}"
            )
        return min(self.shortlist, results.num_candidates)

    def pair_scores(self, results: RetrievalResults, query_dataset, gallery_dataset,
                    query_positions: Tensor | None = None) -> dict[str, Tensor]:
        """Every score type of the shortlist pairs, each ``(Q, B)`` float32 (NaN: not scored or empty slot).

        ``query_positions (Q,)``: the dataset index of each results row (default: row i is query i).
        """
        shortlist = self._check(results)
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
        return {name: torch.as_tensor(self.calibrators[name].predict(values.double().numpy()))
                for name, values in scores.items()}

    def fuse(self, probabilities: Mapping[str, Tensor]) -> Tensor:
        """Weighted mean of the calibrated probabilities available for each pair, ``(Q, B)`` (NaN: none)."""
        total = weight_sum = None
        for name, probability in probabilities.items():
            weight = float(self.weights.get(name, 1.0))
            available = ~torch.isnan(probability)
            term = torch.where(available, probability * weight, 0.0)
            used = available.double() * weight
            total = term if total is None else total + term
            weight_sum = used if weight_sum is None else weight_sum + used
        return torch.where(weight_sum > 0, total / weight_sum.clamp(min=1e-12), float("nan"))

    def rerank(self, results: RetrievalResults, probabilities: Mapping[str, Tensor]) -> RetrievalResults:
        """Results with the shortlist re-sorted by the fused ``probabilities`` (from :meth:`calibrate`)."""
        return results.rerank(self.fuse(probabilities))

    def __call__(self, results: RetrievalResults, query_dataset, gallery_dataset) -> RetrievalResults:
        """Score, calibrate and fuse the shortlist pairs; the reranked results (``results`` is unchanged)."""
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
        """The queries :meth:`fit` uses (at most ``max_queries``, a seeded random subset) and their pair scores."""
        keep = torch.arange(results.num_queries)
        if max_queries is not None and results.num_queries > max_queries:
            generator = torch.Generator().manual_seed(seed)
            keep = torch.randperm(results.num_queries, generator=generator)[:max_queries].sort().values
        subset = results.select(keep)
        return subset, self.pair_scores(subset, query_dataset, gallery_dataset, query_positions=keep)

    def fit_calibrators(self, scores: Mapping[str, Tensor], *, hits: Tensor) -> PairwiseReranker:
        """Fit one calibrator per score type on ``(Q, B)`` pair scores and ``hits (Q, >= B)`` of their pairs."""
        hits = hits[:, : next(iter(scores.values())).shape[1]].cpu()
        for name, values in scores.items():
            scored = ~torch.isnan(values)
            calibrator = IsotonicCalibration() if self.calibration == "isotonic" else LogisticCalibration()
            calibrator.fit(values[scored].double().numpy(), hits[scored].numpy())
            self.calibrators[name] = calibrator
        return self

    def save(self, folder: str | Path) -> Path:
        """Write the calibrators (one JSON each) and ``index.json`` (names, weights, shortlist) to ``folder``."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        index = {}
        for name, calibrator in self.calibrators.items():
            filename = file_name(name) + ".json"
            calibrator.save(folder / filename)
            index[name] = filename
        settings = {"shortlist": self.shortlist, "calibration": self.calibration,
                    "include_global": self.include_global, "weights": self.weights, "calibrators": index}
        (folder / "index.json").write_text(json.dumps(settings, indent=2))
        return folder

    def load(self, folder: str | Path) -> PairwiseReranker:
        """Read calibrators and weights saved by :meth:`save`; the scorers stay the ones given to ``__init__``.

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
        return self

    def _incompatibilities(self, settings: dict) -> list[str]:
        """How saved ``index.json`` settings differ from this reranker's calibration and score types."""
        problems = []
        if settings.get("calibration") != self.calibration:
            problems.append(f"calibration {settings.get('calibration')!r} saved, {self.calibration!r} here")
        saved = set(settings.get("calibrators", {}))
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
