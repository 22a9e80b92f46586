"""``LocalFeatureReranking``: WildFusion-style test-time reranking of each query's global shortlist."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor

from ..retrieval import RetrievalResults
from ..similarity.calibration import (
    Calibration,
    IsotonicCalibration,
    LogisticCalibration,
    reliability_diagram,
)
from ..similarity import PairScorer

GLOBAL_SCORE = "global"


class LocalFeatureReranking(Callback):
    """Reranks the top-``shortlist`` gallery candidates of every test query with calibrated, fused scores.

    Before testing, one calibrator per score type (the global embedding score and every local score) is fitted
    on shortlist pairs of the validation queries (never a self-pair, never a test image). At test time the
    shortlist pairs are scored by every :class:`PairScorer`, calibrated, fused (weighted mean of the available
    calibrated probabilities) and re-sorted above the untouched tail. Metrics before and after are logged as
    ``test/...`` and ``test/reranked/...``; the fitted calibrators are saved next to the run's logs, with one
    reliability diagram per score type drawn on the test shortlist (its ECE is logged as
    ``test/reranked/ece/<score>``).
    """

    def __init__(self, scorers: list[PairScorer], shortlist: int = 20,
                 calibration: Literal["isotonic", "logistic"] = "isotonic", include_global: bool = True,
                 weights: dict[str, float] | None = None, calibration_queries: int | None = 500,
                 save_dir: str | None = None) -> None:
        """
        Args:
            scorers: local score types (extractor + matcher) to compute for the shortlist pairs.
            shortlist: candidates per query (B) rescored; the rest keep their global order below them.
            calibration: ``isotonic`` or ``logistic`` calibration of every score type.
            include_global: fuse the calibrated global score with the local ones (WildFusion).
            weights: optional fusion weight per score name (missing names weigh 1).
            calibration_queries: at most this many validation queries are used to fit the calibrators.
            save_dir: where the calibrators go (default: ``<log_dir>/calibration``).
        """
        if shortlist < 1:
            raise ValueError(f"shortlist must be at least 1, got {shortlist}")
        if not scorers and not include_global:
            raise ValueError("give at least one scorer (or include_global=True)")
        self.scorers = list(scorers)
        self.shortlist = shortlist
        self.calibration = calibration
        self.include_global = include_global
        self.weights = dict(weights or {})
        self.calibration_queries = calibration_queries
        self.save_dir = save_dir
        self.calibrators: dict[str, Calibration] = {}

    # ------------------------------------------------------------------ scoring
    def _new_calibrator(self) -> Calibration:
        if self.calibration == "isotonic":
            return IsotonicCalibration()
        if self.calibration == "logistic":
            return LogisticCalibration()
        raise ValueError(f"Unknown calibration {self.calibration!r}; choose 'isotonic' or 'logistic'")

    def pair_scores(self, results: RetrievalResults, query_dataset, gallery_dataset) -> dict[str, Tensor]:
        """Every score type of the shortlist pairs, each ``(Q, B)`` float32 (NaN: not scored)."""
        shortlist = min(self.shortlist, results.candidate_indices.shape[1])
        candidates = results.candidate_indices[:, :shortlist].cpu()
        queries = torch.arange(len(candidates))[:, None].expand_as(candidates)
        pairs = torch.stack([queries.flatten(), candidates.flatten()], dim=1)
        scores: dict[str, Tensor] = {}
        if self.include_global:
            scores[GLOBAL_SCORE] = results.candidate_scores[:, :shortlist].float().cpu()
        for scorer in self.scorers:
            for name, values in scorer.score(query_dataset, gallery_dataset, pairs).items():
                scores[name] = values.reshape(candidates.shape)
        return scores

    def fit(self, scores: dict[str, Tensor], hits: Tensor) -> None:
        """Fit one calibrator per score type on pairs ``(Q, B)`` with their ``hits`` (same identity)."""
        for name, values in scores.items():
            scored = ~torch.isnan(values)
            calibrator = self._new_calibrator()
            calibrator.fit(values[scored].double().numpy(), hits[scored].numpy())
            self.calibrators[name] = calibrator

    def calibrate(self, scores: dict[str, Tensor]) -> dict[str, Tensor]:
        """Calibrated probabilities of every score type, ``(Q, B)`` float64 each (NaN stays NaN)."""
        missing = sorted(set(scores) - set(self.calibrators))
        if missing:
            raise RuntimeError(f"no calibrator fitted for {missing}; the reranking calibration did not run")
        return {name: torch.as_tensor(self.calibrators[name].predict(values.double().numpy()))
                for name, values in scores.items()}

    def fuse(self, scores: dict[str, Tensor], *, calibrated: bool = False) -> Tensor:
        """Weighted mean of the calibrated probabilities available for each pair, ``(Q, B)`` (NaN: none)."""
        probabilities = scores if calibrated else self.calibrate(scores)
        total = weight_sum = None
        for name, probability in probabilities.items():
            weight = float(self.weights.get(name, 1.0))
            available = ~torch.isnan(probability)
            term = torch.where(available, probability * weight, 0.0)
            used = available.double() * weight
            total = term if total is None else total + term
            weight_sum = used if weight_sum is None else weight_sum + used
        return torch.where(weight_sum > 0, total / weight_sum.clamp(min=1e-12), float("nan"))

    def rerank(self, results: RetrievalResults, query_dataset, gallery_dataset) -> RetrievalResults:
        """Results with each query's shortlist re-sorted by fused calibrated scores."""
        return results.rerank(self.fuse(self.pair_scores(results, query_dataset, gallery_dataset)))

    def calibration_report(self, probabilities: dict[str, Tensor], hits: Tensor, folder: Path | None) -> dict:
        """Expected calibration error of every calibrated score type on held-out pairs; with ``folder``, one
        reliability diagram per type is saved there as PNG."""
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
                figure.savefig(folder / f"reliability_{_file_name(name)}.png", dpi=100, bbox_inches="tight")
            plt.close(figure)
        return errors

    # ------------------------------------------------------------------ Lightning hooks
    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "eval_datasets"):
            raise TypeError("LocalFeatureReranking needs the images behind the test loaders: run the test with a "
                            "ReIDDataModule (trainer.test(model, datamodule=...) or train.py)")
        datasets, loaders = datamodule.eval_datasets("val"), datamodule.val_dataloader()
        if not loaders:
            raise ValueError("LocalFeatureReranking fits its calibration on validation images, but the "
                             "validation split is empty: set data.val_ratio > 0")
        query_dataset, gallery_dataset = datasets[0], (datasets[1] if len(datasets) > 1 else None)
        query_loader, gallery_loader = loaders[0], (loaders[1] if len(loaders) > 1 else None)
        if self.calibration_queries is not None and len(query_dataset) > self.calibration_queries:
            keep = torch.randperm(len(query_dataset), generator=torch.Generator().manual_seed(0))
            keep = keep[: self.calibration_queries].sort().values
        else:
            keep = torch.arange(len(query_dataset))
        query, query_labels = pl_module.embed_dataloader(query_loader)
        if gallery_loader is None:  # leave-one-out: the other validation images form the gallery
            gallery, gallery_labels, gallery_dataset = query, query_labels, query_dataset
        else:
            gallery, gallery_labels = pl_module.embed_dataloader(gallery_loader)
        leave_one_out = gallery_loader is None
        results, _ = pl_module.retrieve(query, gallery, query_labels=query_labels, gallery_labels=gallery_labels,
                                        leave_one_out=leave_one_out, shortlist=self.shortlist)
        results = _select_queries(results, keep.to(results.candidate_indices.device))
        subset = query_dataset.get_subset(keep.numpy())
        scores = self.pair_scores(results, subset, gallery_dataset)
        hits = (results.candidate_labels[:, : self.shortlist] == results.query_labels[:, None]).cpu()
        self.fit(scores, hits)
        self._save(trainer)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results, _ = pl_module.evaluation_results()
        datasets = trainer.datamodule.eval_datasets("test")
        query_dataset, gallery_dataset = datasets[0], datasets[-1]
        start = time.perf_counter()
        probabilities = self.calibrate(self.pair_scores(results, query_dataset, gallery_dataset))
        reranked = results.rerank(self.fuse(probabilities, calibrated=True))
        seconds = time.perf_counter() - start
        for name, value in reranked.metrics(top_k=tuple(pl_module.hparams.top_k)).items():
            pl_module.log(f"test/reranked/{name}", float(value), sync_dist=False)
        pl_module.log("test/reranked/seconds", seconds, sync_dist=False)
        # calibration quality on the test shortlist, which the calibrators never saw
        shortlist = next(iter(probabilities.values())).shape[1]
        hits = (results.candidate_labels[:, :shortlist] == results.query_labels[:, None]).cpu()
        folder = self._folder(trainer) if trainer.is_global_zero else None
        for name, error in self.calibration_report(probabilities, hits, folder).items():
            pl_module.log(f"test/reranked/ece/{name}", error, sync_dist=False)

    def _folder(self, trainer: L.Trainer) -> Path:
        return Path(self.save_dir or Path(trainer.log_dir or trainer.default_root_dir) / "calibration")

    def _save(self, trainer: L.Trainer) -> None:
        if not trainer.is_global_zero:
            return
        folder = self._folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        index = {}
        for name, calibrator in self.calibrators.items():
            filename = _file_name(name) + ".json"
            calibrator.save(folder / filename)
            index[name] = filename
        (folder / "index.json").write_text(json.dumps({"weights": self.weights, "calibrators": index}, indent=2))


def _file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def _select_queries(results: RetrievalResults, keep: Tensor) -> RetrievalResults:
    """The same results restricted to the queries ``keep``."""
    return RetrievalResults(
        candidate_indices=results.candidate_indices[keep],
        candidate_scores=results.candidate_scores[keep],
        gallery_labels=results.gallery_labels,
        query_labels=None if results.query_labels is None else results.query_labels[keep],
        scores=None if results.scores is None else results.scores[keep],
        exclude=None if results.exclude is None else results.exclude[keep],
    )
