"""``LocalFeatureReranking``: the Lightning adapter of :class:`~reid_lightning.similarity.PairwiseReranker`."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from ..inference.predictions import RankedAnswers
from ..inference.threshold import choose_probability_threshold, top1_decision_inputs
from ..interrupt import interruptible
from ..metrics.open_set import open_set_metrics
from ..retrieval import RetrievalResults
from ..rundir import run_log_dir
from ..similarity import PairScorer, PairwiseReranker


class LocalFeatureReranking(Callback):
    """Reranks the top-``shortlist`` gallery candidates of every test query, and of every new photo at predict,
    with calibrated, fused scores.

    Before testing, the reranker's calibrators are fitted on shortlist pairs of the validation queries (never a
    self-pair, never a test image), whose embeddings are computed under the trainer's precision like the test
    embeddings. At the end of the test epoch the module's :class:`RetrievalResults` are reranked; metrics before
    and after are logged as ``test/...`` and ``test/reranked/...``. The calibrators are saved next to the run's
    logs with one reliability diagram per score type drawn on the test shortlist (its ECE is logged as
    ``test/reranked/ece/<score>``). An open-set threshold on the fused probability is chosen on the same validation
    queries (saved as ``threshold.json`` next to the calibrators); with unknown test queries the reranked open-set
    metrics are logged as ``test/reranked/open/*``.

    At predict, each new photo's shortlist in the gallery is reranked the same way: the answer is the reranked
    top-1, its confidence the fused probability, "new individual" below ``threshold.json``'s threshold. The
    calibrators and threshold are read from ``calibration_dir`` (the folder a test run saved) or, without it,
    fitted on the validation split exactly as before a test (and saved the same way).
    """

    def __init__(self, scorers: list[PairScorer], shortlist: int = 20,
                 calibration: Literal["isotonic", "logistic"] = "isotonic", include_global: bool = True,
                 weights: dict[str, float] | None = None, calibration_queries: int | None = 500,
                 save_dir: str | None = None, calibration_dir: str | None = None) -> None:
        """
        Args:
            scorers: local score types (extractor + matcher) to compute for the shortlist pairs.
            shortlist: candidates per query (B) rescored; the rest keep their global order below them.
            calibration: ``isotonic`` or ``logistic`` calibration of every score type.
            include_global: fuse the calibrated global score with the local ones (WildFusion).
            weights: optional fusion weight per score name (missing names weigh 1).
            calibration_queries: at most this many validation queries are used to fit the calibrators.
            save_dir: where the calibrators go (default: ``<log_dir>/calibration``).
            calibration_dir: predict only: the folder of calibrators and ``threshold.json`` a test run with the same
                scorers saved; None: fit them on the validation split as a test run does.
        """
        self.reranker = PairwiseReranker(scorers, shortlist=shortlist, calibration=calibration,
                                         include_global=include_global, weights=weights)
        self.calibration_queries = calibration_queries
        self.save_dir = save_dir
        self.calibration_dir = calibration_dir
        # the last test epoch's shortlist scores, probabilities and reranked results (read by RetrievalReport)
        self.last_scores: dict[str, torch.Tensor] | None = None
        self.last_probabilities: dict[str, torch.Tensor] | None = None
        self.last_reranked: RetrievalResults | None = None
        self.threshold: float | None = None
        """Open-set threshold on the fused calibrated probability (chosen on validation before testing)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        # the module's evaluation results must hold the whole shortlist
        pl_module.require_candidates(self.reranker.shortlist)

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        with interruptible("calibration (validation)", sigterm_received=lambda: trainer.received_sigterm):
            self._fit_on_validation(trainer, pl_module)
        if self.threshold is not None:
            pl_module.log("test/reranked/open/threshold", self.threshold, sync_dist=False)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.calibration_dir is not None:
            self.threshold = self._load_calibration(Path(self.calibration_dir).expanduser())
            return
        with interruptible("calibration (validation)", sigterm_received=lambda: trainer.received_sigterm):
            folder = self._fit_on_validation(trainer, pl_module)
        if self.threshold is None:
            raise ValueError("predict with LocalFeatureReranking needs an open-set threshold on the fused probability, "
                             "and none could be chosen on the validation split (see the warning above): pass "
                             "calibration_dir, the folder of a test run's calibrators and threshold.json")
        rank_zero_info(f"reranking calibrators fitted on validation and saved in {folder}; pass "
                       "--trainer.callbacks.init_args.calibration_dir with that folder to reuse them")

    def rerank_predictions(self, results: RetrievalResults, query_dataset, gallery_dataset) -> RankedAnswers:
        """The new photos' shortlists reranked by the fused calibrated probability, which is also the
        confidence (the tail, never scored, is left out); see :class:`~reid_lightning.inference.PredictionReranker`."""
        if self.threshold is None:
            raise RuntimeError("rerank_predictions runs after on_predict_start, which loads or fits the calibrators")
        with interruptible("predict"):
            reranked = self.reranker(results, query_dataset, gallery_dataset)
        return RankedAnswers(reranked.head(self.reranker.shortlist), threshold=self.threshold,
                             score="fused calibrated probability")

    def _load_calibration(self, folder: Path) -> float:
        """Load the calibrators a test run saved in ``folder``; the open-set threshold of its ``threshold.json``."""
        advice = ("give calibration_dir the 'calibration' folder of a `train.py test` run with this same reranking "
                  "config, or leave calibration_dir out to fit the calibrators on the validation split")
        try:
            self.reranker.load(folder)
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"calibration_dir '{folder}': {error}. {advice}") from error
        threshold_path = folder / "threshold.json"
        if not threshold_path.is_file():
            raise ValueError(f"calibration_dir '{folder}' holds no threshold.json (that test run could choose no "
                             f"open-set threshold on validation). {advice}")
        return float(json.loads(threshold_path.read_text())["open_set_threshold"])

    def _fit_on_validation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        """Fit the calibrators and choose the open-set threshold on the validation queries; save both (the folder
        is returned)."""
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "eval_datasets"):
            raise TypeError("LocalFeatureReranking fits its calibrators on the validation images: run with a "
                            "ReIDDataModule (trainer.test(model, datamodule=...) or train.py)")
        datasets, loaders = datamodule.eval_datasets("val"), datamodule.val_dataloader()
        if not loaders:
            raise ValueError("LocalFeatureReranking fits its calibration on validation images, but the "
                             "validation split is empty: set data.val_ratio > 0 (or, at predict, pass "
                             "calibration_dir, the folder of a test run's calibrators)")
        groups = datamodule.eval_groups("val")
        query, query_labels = pl_module.embed(loaders[0])
        leave_one_out = len(loaders) == 1  # the other validation images form the gallery
        gallery, gallery_labels = (query, query_labels) if leave_one_out else pl_module.embed(loaders[1])
        results = pl_module.search(query, gallery, query_labels=query_labels, gallery_labels=gallery_labels,
                                   query_groups=torch.as_tensor(groups[0]), gallery_groups=torch.as_tensor(groups[-1]),
                                   leave_one_out=leave_one_out, k=self.reranker.shortlist)
        subset, scores = self.reranker.fit_scores(results, datasets[0], datasets[-1],
                                                  max_queries=self.calibration_queries)
        self.reranker.fit_calibrators(scores, hits=subset.hits)
        # the open-set threshold on the fused probabilities, chosen on the same validation pairs
        try:
            self.threshold, gmean = choose_probability_threshold(
                self.reranker, subset, scores, holdout=pl_module.hparams.get("open_set_holdout", 0.2))
        except ValueError as error:
            rank_zero_warn(f"no open-set threshold on the reranked probabilities: {error}")
            self.threshold = None
        folder = self._folder(trainer)
        if trainer.is_global_zero:
            self.reranker.save(folder)
            if self.threshold is not None:
                (folder / "threshold.json").write_text(json.dumps(
                    {"open_set_threshold": self.threshold, "score": "fused calibrated probability",
                     "validation_gmean": gmean}, indent=2))
        return folder

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results = pl_module.evaluation_results()
        datasets = trainer.datamodule.eval_datasets("test")
        start = time.perf_counter()
        with interruptible("test", sigterm_received=lambda: trainer.received_sigterm):
            scores = self.reranker.pair_scores(results, datasets[0], datasets[-1])
        probabilities = self.reranker.calibrate(scores)
        reranked = self.reranker.rerank(results, probabilities)
        seconds = time.perf_counter() - start
        self.last_scores, self.last_probabilities, self.last_reranked = scores, probabilities, reranked
        for name, value in reranked.metrics(top_k=tuple(pl_module.hparams.top_k)).items():
            pl_module.log(f"test/reranked/{name}", float(value), sync_dist=False)
        pl_module.log("test/reranked/seconds", seconds, sync_dist=False)
        inputs = top1_decision_inputs(reranked)
        if self.threshold is not None and not inputs["known"].all():
            for name, value in open_set_metrics(**inputs, threshold=self.threshold).items():
                if not math.isnan(value):  # undefined here (e.g. no unknown identity)
                    pl_module.log(f"test/reranked/open/{name}", value, sync_dist=False)
        # calibration quality on the test shortlist, which the calibrators never saw
        hits = results.hits[:, : next(iter(probabilities.values())).shape[1]].cpu()
        folder = self._folder(trainer)
        folder = folder if trainer.is_global_zero else None
        for name, error in self.reranker.calibration_errors(probabilities, hits, folder).items():
            pl_module.log(f"test/reranked/ece/{name}", error, sync_dist=False)

    def _folder(self, trainer: L.Trainer) -> Path:
        # run_log_dir is a broadcast under DDP: the callers call this on every process
        return Path(self.save_dir) if self.save_dir else run_log_dir(trainer) / "calibration"
