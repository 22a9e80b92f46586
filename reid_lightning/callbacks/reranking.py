"""``LocalFeatureReranking``: the Lightning adapter of :class:`~reid_lightning.similarity.PairwiseReranker`."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor

from ..distributed import gather_in_order
from ..inference.discovery import Discovery, choose_discovery_threshold, discover
from ..inference.open_set import OpenSetModel, decision_inputs, fit_open_set, open_set_log_values
from ..inference.predictions import RankedAnswers
from ..interrupt import interruptible, shows_progress
from ..metrics.discovery import discovery_metrics
from ..retrieval import RetrievalResults
from ..rundir import run_log_dir
from ..runtime.grouping import SimilarityGraph
from ..similarity import IdentityWidening, PairScorer, PairwiseReranker, choose_shortlist, shortlist_recall

FUSED_SCORE = "fused calibrated probability"


@dataclass(frozen=True)
class RerankedEvaluation:
    """A reranked evaluation: the reranked results and the shortlist scores behind them.

    Attributes:
        reranked: the results with every shortlist re-sorted by the fused probability.
        pair_scores: ``{score name: (Q, B)}`` raw scores of the shortlist pairs.
        probabilities: ``{score name: (Q, B)}`` their calibrated probabilities.
    """

    reranked: RetrievalResults
    pair_scores: dict[str, Tensor]
    probabilities: dict[str, Tensor]


class LocalFeatureReranking(Callback):
    """Reranks the top-``shortlist`` gallery candidates of every test query, and of every new photo at predict,
    with calibrated, fused scores.

    Before testing, the reranker's calibrators are fitted on shortlist pairs of the validation queries (never a
    self-pair, never a test image), whose embeddings are computed under the trainer's precision like the test
    embeddings; the open-set threshold and confidence calibration of the fused probability are fitted on the same
    queries, and, when validation holds identities absent from the gallery (``--data.val_unseen_ratio``), the cut
    that groups new photos by the fused probability of their local matches with their ``discovery_k`` nearest new
    photos. Both are saved in ``<log_dir>/calibration`` (``threshold.json``: :meth:`OpenSetModel.save`). At the
    end of the test epoch the module's :meth:`~ReIDModule.evaluation_results` are reranked and logged as
    ``test/reranked/...`` (metrics, open set, calibration error per score type, seconds); :attr:`test_evaluation`
    holds them for other callbacks (the report). Under DDP the pairs are split between the processes: each pair is
    matched once. At predict, :meth:`rerank_predictions` reranks the new photos' shortlists with the calibrators
    of ``calibration_dir`` (a test run's folder) or fitted on validation as before a test.
    """

    def __init__(self, scorers: list[PairScorer], shortlist: int | Literal["auto"] = 20,
                 calibration: Literal["isotonic", "logistic"] = "isotonic", include_global: bool = True,
                 weights: dict[str, float] | None = None, calibration_queries: int | None = 500,
                 save_dir: str | None = None, calibration_dir: str | None = None, discovery_k: int = 10,
                 widening: IdentityWidening | None = None) -> None:
        """
        Args:
            scorers: local score types (extractor + matcher) to compute for the shortlist pairs.
            shortlist: candidates per query (B) rescored; the rest keep their global order below them (at most
                the model's ``--model.candidates``). ``auto``: the smallest B whose validation recall (queries with
                their identity among the top B) keeps 0.98 of the recall at ``--model.candidates`` with 95 %
                confidence (``choose_shortlist``: with few validation queries, all the candidates).
            calibration: ``isotonic`` or ``logistic`` calibration of every score type.
            include_global: fuse the calibrated global score with the local ones (WildFusion).
            weights: optional fusion weight per score name (missing names weigh 1).
            calibration_queries: at most this many validation queries are used to fit the calibrators.
            save_dir: where the calibrators go (default: ``<log_dir>/calibration``).
            calibration_dir: predict only: the folder of calibrators and ``threshold.json`` a test run with the same
                scorers saved; None: fit them on the validation split as a test run does.
            discovery_k: nearest new photos each new photo is matched with when new photos are grouped.
            widening: fill the shortlist with the identities the first scorer finds by matching each query with
                one image of every identity (:class:`~reid_lightning.similarity.IdentityWidening`), for a weak
                global model; the model must keep the whole ranking (``--model.candidates`` at least the gallery
                size).
        """
        self.auto_shortlist = shortlist == "auto"
        if self.auto_shortlist and widening is not None:
            raise ValueError("shortlist 'auto' follows the global model's recall, which widening replaces: give the "
                             "shortlist size with widening (e.g. shortlist: 20)")
        self.reranker = PairwiseReranker(scorers, shortlist=100 if self.auto_shortlist else int(shortlist),
                                         calibration=calibration, include_global=include_global, weights=weights,
                                         widening=widening)
        self.calibration_queries = calibration_queries
        self.discovery_k = discovery_k
        self.save_dir = save_dir
        self.calibration_dir = calibration_dir
        self.open_set: OpenSetModel | None = None
        """Open-set threshold and confidence calibration of the fused probability (fitted on validation)."""
        self.test_evaluation: RerankedEvaluation | None = None
        """The last test epoch's reranked results and shortlist scores."""
        self.validation_recall: dict[int, float] = {}
        """Recall of the global model's top-B on the validation queries, per B (from the last calibration)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        candidates = pl_module.hparams.get("candidates")
        if self.auto_shortlist and candidates is not None:
            self.reranker.shortlist = candidates  # the largest affordable B; narrowed on validation
        if candidates is not None and candidates < self.reranker.shortlist:
            raise ValueError(f"the reranking shortlist is {self.reranker.shortlist} candidates but the model keeps "
                             f"{candidates} per query: pass --model.candidates {self.reranker.shortlist} (or more)")

    def on_test_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._fit_on_validation(trainer, pl_module)

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.calibration_dir is not None:
            self._load_calibration(Path(self.calibration_dir).expanduser())
            return
        folder = self._fit_on_validation(trainer, pl_module)
        if self.open_set is None or self.open_set.threshold is None:
            raise ValueError("predict with LocalFeatureReranking needs an open-set threshold on the fused probability, "
                             "and none could be chosen on the validation split (see the warning above): pass "
                             "calibration_dir, the folder of a test run's calibrators and threshold.json")
        rank_zero_info(f"reranking calibrators fitted on validation and saved in {folder}; pass "
                       "--trainer.callbacks.init_args.calibration_dir with that folder to reuse them")

    def rerank_predictions(self, trainer: L.Trainer, results: RetrievalResults, query_dataset, gallery_dataset
                           ) -> RankedAnswers:
        """The new photos' shortlists reranked by the fused calibrated probability (the tail, never scored, is left
        out), decided and given a confidence by the fused probability's open-set model. A collective under DDP."""
        if self.open_set is None:
            raise RuntimeError("rerank_predictions runs after on_predict_start, which loads or fits the calibrators")
        results = self._widen(trainer, results, query_dataset, gallery_dataset, phase="predict")
        scores = self._pair_scores(trainer, results, query_dataset, gallery_dataset, phase="predict")
        reranked = self.reranker.rerank(results, self.reranker.calibrate(scores))
        return RankedAnswers(reranked.head(self.reranker.shortlist), self.open_set)

    def _load_calibration(self, folder: Path) -> None:
        """Load the calibrators and ``threshold.json`` a test run saved in ``folder``."""
        advice = ("give calibration_dir the 'calibration' folder of a `train.py test` run with this same reranking "
                  "config, or leave calibration_dir out to fit the calibrators on the validation split")
        try:
            self.reranker.load(folder)
        except (FileNotFoundError, ValueError) as error:
            raise ValueError(f"calibration_dir '{folder}': {error}. {advice}") from error
        if self.auto_shortlist:
            self.reranker.shortlist = json.loads((folder / "index.json").read_text())["shortlist"]
        threshold_path = folder / "threshold.json"
        if not threshold_path.is_file():
            raise ValueError(f"calibration_dir '{folder}' holds no threshold.json (that test run could choose no "
                             f"open-set threshold on validation). {advice}")
        self.open_set = OpenSetModel.load(threshold_path)

    def _fit_on_validation(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Path:
        """Fit the calibrators and the fused probability's open-set model on the validation queries; save both
        (the folder is returned)."""
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "eval_datasets"):
            raise TypeError("LocalFeatureReranking fits its calibrators on the validation images: run with a "
                            "ReIDDataModule (trainer.test(model, datamodule=...) or train.py)")
        datasets, loaders = datamodule.eval_datasets("val"), datamodule.val_dataloader()
        if not loaders:
            raise ValueError("LocalFeatureReranking fits its calibration on validation images, but the "
                             "validation split is empty: set data.val_ratio > 0 (or, at predict, pass "
                             "calibration_dir, the folder of a test run's calibrators)")
        # widening reads every identity's candidates: the whole ranking
        depth = len(datasets[-1]) if self.reranker.widening is not None else self.reranker.shortlist
        results, embeddings = pl_module.searcher.loaders(
            pl_module.embed, loaders, datamodule.eval_groups("val"), phase="calibration (validation)",
            k=depth, progress=shows_progress(trainer))
        self.validation_recall = shortlist_recall(results)
        if self.auto_shortlist:
            self.reranker.shortlist = choose_shortlist(results)
            chosen, largest = self.reranker.shortlist, max(self.validation_recall)
            recall = self.validation_recall
            rank_zero_info(
                f"reranking shortlist {chosen}: validation recall {recall[chosen]:.3f} against {recall[largest]:.3f}"
                f" at all {largest} candidates, under 2 % lost with 95 % confidence" if chosen < largest else
                f"reranking shortlist {largest}, every candidate: the validation queries certify no shorter list "
                f"losing under 2 % of their recall ({recall[largest]:.3f}) with 95 % confidence")
        keep = self.reranker.calibration_subset(results.num_queries, max_queries=self.calibration_queries)
        subset = self._widen(trainer, results.select(keep), datasets[0], datasets[-1], query_positions=keep,
                             phase="calibration (validation)")
        scores = self._pair_scores(trainer, subset, datasets[0], datasets[-1], query_positions=keep,
                                   phase="calibration (validation)")
        self.reranker.fit_calibrators(scores, hits=subset.hits)
        fused = self.reranker.rerank(subset, self.reranker.calibrate(scores)).head(self.reranker.shortlist)
        self.open_set = fit_open_set(fused, score=FUSED_SCORE, holdout=pl_module.hparams.get("open_set_holdout", 0.2))
        if self.open_set.threshold is None:
            rank_zero_warn(f"no open-set threshold on the reranked probabilities: {self.open_set.held_out}")
        self._choose_discovery_cut(trainer, pl_module, results, embeddings, datasets[0])
        folder = self._folder(trainer)
        if trainer.is_global_zero:
            self.reranker.save(folder)
            if self.open_set.threshold is not None:
                self.open_set.save(folder / "threshold.json")
        return folder

    def _unknown_photos(self, results: RetrievalResults) -> Tensor:
        """Positions of the labelled queries whose identity is absent from the gallery."""
        return (~decision_inputs(results)["known"]).nonzero().flatten()

    def _choose_discovery_cut(self, trainer: L.Trainer, pl_module: L.LightningModule, results: RetrievalResults,
                              embeddings: Tensor, dataset) -> None:
        """The cut of the fused grouping graph with the best AMI on the validation queries of identities absent
        from the gallery (identities kept out of training); none without such queries of 2 identities or more."""
        unknown = self._unknown_photos(results)
        labels = results.query_labels.cpu()[unknown]
        if len(unknown) < 3 or len(torch.unique(labels)) < 2:
            return
        graph = self.grouping_graph(trainer, pl_module, embeddings[unknown.to(embeddings.device)],
                                    dataset.get_subset(unknown.numpy()), phase="calibration (validation): grouping")
        cut, ami = choose_discovery_threshold(graph, true_labels=labels.numpy())
        self.open_set = replace(self.open_set, discovery_threshold=cut, discovery_k=self.discovery_k,
                                discovery_ami=ami, discovery_interval=None)
        rank_zero_info(f"new photos grouped at fused probability {cut:.4f} (AMI {ami:.4f} on {len(unknown)} "
                       "validation photos of individuals absent from the gallery)")

    def grouping_graph(self, trainer: L.Trainer, pl_module: L.LightningModule, embeddings: Tensor, dataset, *,
                       phase: str) -> SimilarityGraph:
        """Each photo (``embeddings (N, D)``, ``dataset``) linked to its ``discovery_k`` nearest others by cosine,
        every link scored by the fused calibrated probability of the pair (a collective under DDP)."""
        count = len(embeddings)
        neighbours = pl_module.searcher(embeddings, embeddings, gallery_labels=torch.arange(count),
                                        leave_one_out=True, k=min(self.discovery_k, count - 1))
        scores = self._pair_scores(trainer, neighbours, dataset, dataset, phase=phase,
                                   shortlist=neighbours.num_candidates)
        fused = self.reranker.fuse(self.reranker.calibrate(scores))
        candidates = neighbours.candidate_indices.cpu()
        linked = (candidates >= 0) & ~torch.isnan(fused)
        rows = torch.arange(count)[:, None].expand_as(candidates)
        return SimilarityGraph.from_edges(torch.stack([rows[linked], candidates[linked]], dim=1), fused[linked],
                                          num_nodes=count, missing_score=0.0)

    def group_new_photos(self, trainer: L.Trainer, pl_module: L.LightningModule, embeddings: Tensor, dataset
                         ) -> Discovery | None:
        """Proposed individuals among new photos by the fused grouping graph, or None without a fused cut (the
        caller then groups by cosine). A collective under DDP."""
        if self.open_set is None or self.open_set.discovery_threshold is None or len(embeddings) < 2:
            return None
        stage = trainer.state.stage.value if trainer.state.stage is not None else "predict"
        graph = self.grouping_graph(trainer, pl_module, embeddings, dataset, phase=f"{stage}: grouping")
        return discover(graph, threshold=self.open_set.discovery_threshold)

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        results = pl_module.evaluation_results()
        datasets = trainer.datamodule.eval_datasets("test")
        start = time.perf_counter()
        results = self._widen(trainer, results, datasets[0], datasets[-1], phase="test")
        scores = self._pair_scores(trainer, results, datasets[0], datasets[-1], phase="test")
        probabilities = self.reranker.calibrate(scores)
        reranked = self.reranker.rerank(results, probabilities)
        seconds = time.perf_counter() - start
        self.test_evaluation = RerankedEvaluation(reranked, scores, probabilities)
        logged = dict(reranked.metrics(top_k=tuple(pl_module.hparams.top_k)))
        if self.open_set is not None and self.open_set.threshold is not None:
            logged["open/threshold"] = self.open_set.threshold
        logged.update(open_set_log_values(reranked.head(self.reranker.shortlist), self.open_set))
        unknown = self._unknown_photos(results)
        if len(unknown) >= 2:
            test_photos = datasets[0].get_subset(unknown.numpy())
            embeddings, _ = pl_module.embed(trainer.datamodule.eval_loader(test_photos),
                                            description="test: embedding new photos")
            grouped = self.group_new_photos(trainer, pl_module, embeddings, test_photos)
            if grouped is not None:
                logged.update({f"discovery/{name}": value for name, value in discovery_metrics(
                    true_labels=results.query_labels.cpu()[unknown].numpy(), proposed_labels=grouped.groups).items()})
        # calibration quality on the test shortlist, which the calibrators never saw
        hits = results.hits[:, : next(iter(probabilities.values())).shape[1]].cpu()
        folder = self._folder(trainer)
        errors = self.reranker.calibration_errors(probabilities, hits, folder if trainer.is_global_zero else None)
        logged.update({f"ece/{name}": error for name, error in errors.items()})
        logged["seconds"] = seconds
        logged["per_query_seconds"] = seconds / max(1, results.num_queries)
        logged["shortlist"] = self.reranker.shortlist
        logged.update({f"val_recall@{size}": recall for size, recall in self.validation_recall.items()})
        report = self.reranker.fusion_report
        if report is not None:
            logged.update({f"fusion_val_top1/{name}": top1 for name, top1 in report.top1.items()})
            rank_zero_info(f"fusion rule chosen on validation: {report.reason} (out-of-fold top-1 "
                           + ", ".join(f"{name} {top1:.3f}" for name, top1 in report.top1.items()) + ")")
        for name, value in logged.items():
            pl_module.log(f"test/reranked/{name}", float(value), sync_dist=False)

    def _pair_scores(self, trainer: L.Trainer, results: RetrievalResults, query_dataset, gallery_dataset, *,
                     phase: str, query_positions: Tensor | None = None, shortlist: int | None = None
                     ) -> dict[str, Tensor]:
        """The reranker's shortlist pair scores (a collective under DDP, each pair matched once); ``phase`` names
        the progress bars."""
        return self._by_query(trainer, results, query_positions, phase=phase, what=f"{phase} pair scores",
                              compute=lambda share, positions: self.reranker.pair_scores(
                                  share, query_dataset, gallery_dataset, query_positions=positions,
                                  shortlist=shortlist))

    def _widen(self, trainer: L.Trainer, results: RetrievalResults, query_dataset, gallery_dataset, *, phase: str,
               query_positions: Tensor | None = None) -> RetrievalResults:
        """``results`` with the shortlist widened by the reranker's widening, if any (a collective under DDP)."""
        if self.reranker.widening is None:
            return results
        mask = self._by_query(trainer, results, query_positions, phase=f"{phase}: widening",
                              what=f"{phase} widened shortlists",
                              compute=lambda share, positions: {"mask": self.reranker.widened_shortlist(
                                  share, query_dataset, gallery_dataset, query_positions=positions).to(torch.uint8)})
        return results.promote(mask["mask"].bool())

    @staticmethod
    def _by_query(trainer: L.Trainer, results: RetrievalResults, query_positions: Tensor | None, *, phase: str,
                  what: str, compute) -> dict[str, Tensor]:
        """``compute(results_share, positions_share) -> {name: (Q_share, ...)}`` over the queries, each process taking
        every ``world_size``-th query and the rows gathered in order, so each pair is matched once; ``phase`` names
        the progress bars, and SIGTERM/SIGINT stop its loops at the next batch."""
        positions = torch.arange(results.num_queries) if query_positions is None else query_positions.cpu()
        world = trainer.world_size
        with interruptible(phase, sigterm_received=lambda: trainer.received_sigterm):
            if world == 1 or results.num_queries < world:
                return compute(results, positions)
            rows = torch.arange(trainer.global_rank, results.num_queries, world)
            share = compute(results.select(rows), positions[rows])
        device = results.candidate_indices.device
        gathered = gather_in_order(trainer, {"index": rows.to(device), **{n: s.to(device) for n, s in share.items()}},
                                   what=what)
        return {name: gathered[name].cpu() for name in share}

    def _folder(self, trainer: L.Trainer) -> Path:
        # run_log_dir is a broadcast under DDP: the callers call this on every process
        return Path(self.save_dir) if self.save_dir else run_log_dir(trainer) / "calibration"
