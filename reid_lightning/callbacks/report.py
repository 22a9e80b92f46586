"""``RetrievalReport``: the visual report of an evaluation, on W&B or as PNG + ``report.html`` in the log dir."""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.trainer.states import TrainerFn

from ..report import ReportInputs, ReportSettings, build_report, log_report_to_wandb, write_report_files
from ..rundir import run_log_dir
from .reranking import LocalFeatureReranking


class RetrievalReport(Callback):
    """Draws the retrieval report of every ``every_n_val_epochs``-th validation epoch (and the last) and of
    every test run from the module's :class:`RetrievalResults` and the evaluation images.

    Panels: the retrieval gallery (worst and random queries with their top-k, reranked order beside the
    global one), positive/negative score histograms, the pair-level PR curve, the CMC curve, reliability
    diagrams of every calibrated reranking score, keypoint-match pictures of a few shown queries and their
    reranked top-1 candidate (per local scorer, at test), a per-query table and an embedding sample for the W&B
    projector. With a :class:`~lightning.pytorch.loggers.WandbLogger` they are logged to W&B under
    ``report/<stage>/...``; otherwise (or with ``write_files=True``) they are written to
    ``<log_dir>/report/<stage>-epoch<N>/`` as PNG/CSV files with a self-contained ``report.html``.
    """

    def __init__(self, every_n_val_epochs: int = 10, on_test: bool = True, panels: list[str] | None = None,
                 worst_queries: int = 8, random_queries: int = 4, top_k: int = 5, thumbnail_size: int = 96,
                 histogram_queries: int = 500, table_rows: int = 200, embeddings: int = 500,
                 match_pairs: int = 4, write_files: bool | None = None, seed: int = 0) -> None:
        """
        Args:
            every_n_val_epochs: report every N-th validation epoch of a fit and its last one (0: never during
                fit); a ``validate`` run is always reported.
            on_test: report every test run.
            panels: names of the panels to draw (default: all registered, see ``reid_lightning.report.PANELS``).
            worst_queries: queries with the lowest AP shown in the retrieval gallery.
            random_queries: random further queries shown in the gallery.
            top_k: gallery candidates shown per query (per ranking).
            thumbnail_size: pixel size of the gallery images.
            histogram_queries: at most this many random queries enter the score histograms and PR curve.
            table_rows: at most this many queries in the per-query table.
            embeddings: at most this many embeddings in the projector table.
            match_pairs: queries of the gallery (worst first) whose matches with their reranked top-1 candidate
                are drawn, per local scorer (0: no match pictures).
            write_files: write PNG + report.html (None: only when no W&B logger is attached).
            seed: seed of every random choice (same queries shown every epoch).
        """
        if every_n_val_epochs < 0:
            raise ValueError(f"every_n_val_epochs must be >= 0, got {every_n_val_epochs}")
        if match_pairs < 0:
            raise ValueError(f"match_pairs must be >= 0, got {match_pairs}")
        self.every_n_val_epochs = every_n_val_epochs
        self.on_test = on_test
        self.panels = panels
        self.settings = ReportSettings(worst_queries=worst_queries, random_queries=random_queries, top_k=top_k,
                                       thumbnail_size=thumbnail_size, histogram_queries=histogram_queries,
                                       table_rows=table_rows, embeddings=embeddings, match_pairs=match_pairs,
                                       seed=seed)
        self.write_files = write_files
        self.last_html: Path | None = None
        self.last_seconds: float | None = None

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        if trainer.state.fn == TrainerFn.VALIDATING:  # `validate` runs: one evaluation, always reported
            self._report(trainer, pl_module, "val")
            return
        epoch = trainer.current_epoch + 1
        if self.every_n_val_epochs and (epoch % self.every_n_val_epochs == 0 or epoch == trainer.max_epochs):
            self._report(trainer, pl_module, "val")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.on_test:
            self._report(trainer, pl_module, "test")

    def _report(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        log_dir = run_log_dir(trainer)  # on every process: trainer.log_dir is a collective (broadcast) under DDP
        if not trainer.is_global_zero:
            return  # every process holds the same results; one report
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "eval_datasets"):
            raise TypeError("RetrievalReport needs the images behind the evaluation loaders: run with a "
                            "ReIDDataModule (trainer.fit/test(model, datamodule=...) or train.py)")
        start = time.perf_counter()
        datasets = datamodule.eval_datasets(stage)
        reranking = next((c for c in trainer.callbacks if isinstance(c, LocalFeatureReranking)), None)
        reranked = reranking.test_evaluation if reranking is not None and stage == "test" else None
        inputs = ReportInputs(
            results=pl_module.evaluation_results(), query_dataset=datasets[0], gallery_dataset=datasets[-1],
            reranked=reranked.reranked if reranked is not None else None,
            pair_scores=reranked.pair_scores if reranked is not None else None,
            probabilities=reranked.probabilities if reranked is not None else None,
            scorers=reranking.reranker.scorers if reranked is not None else (),
            discovery=getattr(pl_module, "discovery", None))
        report = build_report(inputs, self.settings, self.panels)
        wandb_loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        for logger in wandb_loggers:
            log_report_to_wandb(logger.experiment, report, prefix=f"report/{stage}",
                                extra={"trainer/global_step": trainer.global_step})
        epoch = trainer.current_epoch
        if self.write_files or (self.write_files is None and not wandb_loggers):
            metrics = {name: float(value) for name, value in trainer.callback_metrics.items()
                       if name.startswith(f"{stage}/") and value.numel() == 1}
            folder = _new_folder(log_dir / "report" / f"{stage}-epoch{epoch:03d}")
            self.last_html = write_report_files(folder, report, title=f"Retrieval report: {stage}, epoch {epoch}",
                                                metrics=metrics)
        self.last_seconds = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics({f"{stage}/report_seconds": self.last_seconds}, step=trainer.global_step)


def _new_folder(path: Path) -> Path:
    """``path`` created, or ``path-1``, ``path-2``... when it exists (a report never mixes with another's)."""
    for attempt in range(10_000):
        candidate = path if attempt == 0 else path.with_name(f"{path.name}-{attempt}")
        try:
            candidate.mkdir(parents=True)
            return candidate
        except FileExistsError:
            continue
    raise FileExistsError(f"no free folder name for {path}")
