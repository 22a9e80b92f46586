"""``PredictionWriter``: ``predict`` from embeddings of new photos to ``predictions.csv``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Protocol, runtime_checkable

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

from ..distributed import gather_in_order
from ..inference.discovery import Discovery
from ..inference.gallery_cache import GalleryCache, gallery_cache_key
from ..inference.predictions import RankedAnswers, prediction_frame, proposed_identities, review_pair_frame
from ..interrupt import shows_progress
from ..report.contact_sheet import contact_sheet
from ..retrieval import RetrievalResults
from ..rundir import companion_path, run_log_dir, write_new_file

REVIEW_NEIGHBOURS = 30
"""Nearest other new photos of each new photo in ``predictions_pairs.csv``."""


@runtime_checkable
class PredictionReranker(Protocol):
    """A callback that reranks the new photos' gallery search before the answers are decided (e.g.
    ``LocalFeatureReranking``); the writer uses the trainer's one such callback."""

    def rerank_predictions(self, trainer: L.Trainer, results: RetrievalResults, query_dataset, gallery_dataset
                           ) -> RankedAnswers:
        """results: search of the Q new photos (``query_dataset``) in ``gallery_dataset``; a collective."""

    def group_new_photos(self, trainer: L.Trainer, pl_module: L.LightningModule, embeddings: Tensor, dataset
                         ) -> Discovery | None:
        """Proposed individuals among the photos answered new (``embeddings (N, D)``, ``dataset``), or None to
        group them by the model's cosine cut; a collective."""


class PredictionWriter(BasePredictionWriter):
    """Answers "which known individual, or a new one?" for every new photo and writes ``predictions.csv``.

    The module's ``predict_step`` gives each photo's embedding and index; at the end of the epoch the writer
    gathers them from every process in input order, embeds the data module's ``predict_gallery()`` (or reads it from
    ``gallery_cache``), searches the top ``--model.candidates`` of each photo, lets a :class:`PredictionReranker`
    callback rerank them when there is one, decides with the model's (or the reranker's) open-set model and, on the
    global-zero process, writes ``predictions.csv`` (columns: see ``prediction_frame``) and
    ``unreadable_images.csv`` (photos that could not be read), and beside it what ``python -m
    reid_lightning.review`` reads: ``predictions_pairs.csv`` (``review_pair_frame``: each photo's candidate
    individuals and nearest other new photos, with calibrated probabilities) and ``predictions_photos.csv`` (where
    every new and gallery photo is: ``photo_frame``). Works the same from ``train.py predict`` and from
    ``trainer.predict(model, datamodule=dm)`` with the writer among the callbacks.
    """

    def __init__(self, output: str | None = None, gallery_cache: str | None = None) -> None:
        """
        Args:
            output: where ``predictions.csv`` goes (default: the run's log dir); an existing file is never replaced
                (``predictions-1.csv`` ...).
            gallery_cache: folder where the gallery embeddings are kept, keyed by model weights, transform and
                gallery metadata, so that the gallery is embedded once.
        """
        super().__init__(write_interval="epoch")
        self.output = output
        self.gallery_cache = gallery_cache
        self.predictions: pd.DataFrame | None = None
        """The rows of the last ``predictions.csv`` (on the global-zero process)."""
        self.answers: RankedAnswers | None = None
        """The ranked candidates and open-set model those rows were formed from (on the global-zero process)."""
        self.path: Path | None = None
        """Where the last ``predictions.csv`` was written."""
        self.discovery: Discovery | None = None
        """The proposed individuals among the photos answered new (None: no discovery cut)."""
        self._gallery: tuple | None = None

    def on_predict_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        datamodule = trainer.datamodule
        if not hasattr(datamodule, "predict_gallery"):
            raise TypeError("PredictionWriter needs a ReIDDataModule (its gallery of known individuals)")
        if self._reranker(trainer) is None and pl_module.threshold is None:
            raise ValueError("no open-set threshold: the checkpoint holds none (it was trained without validation "
                             "queries); pass --model.open_set_threshold <score>")
        gallery = datamodule.predict_gallery()
        self._gallery = (gallery, self._gallery_embeddings(trainer, pl_module, gallery))
        self.predictions = self.answers = self.path = None

    def _gallery_embeddings(self, trainer: L.Trainer, pl_module: L.LightningModule, gallery) -> Tensor:
        """``(G, D)`` embeddings of the gallery, read from ``gallery_cache`` when cached there."""
        cache = GalleryCache(self.gallery_cache) if self.gallery_cache else None
        key = gallery_cache_key(pl_module, gallery) if cache is not None else ""
        cached = cache.load(key, len(gallery)) if cache is not None else None
        if cached is not None:
            rank_zero_info(f"gallery embeddings of {len(gallery)} images read from {cache.path(key)}")
            return cached.to(pl_module.device)
        embeddings, _ = pl_module.embed(trainer.datamodule.eval_loader(gallery), progress=shows_progress(trainer),
                                        description="predict: embedding gallery")
        if cache is not None and trainer.is_global_zero:
            rank_zero_info(f"gallery embeddings cached in {cache.save(key, embeddings)}")
        return embeddings

    @staticmethod
    def _reranker(trainer: L.Trainer) -> PredictionReranker | None:
        rerankers = [c for c in trainer.callbacks if isinstance(c, PredictionReranker)]
        if len(rerankers) > 1:
            raise ValueError(f"{len(rerankers)} callbacks rerank predictions "
                             f"({', '.join(type(c).__name__ for c in rerankers)}): keep one")
        return rerankers[0] if rerankers else None

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, predictions, batch_indices
                           ) -> None:
        outputs = [batch for loader in _per_loader(predictions) for batch in loader]
        local = {"embedding": torch.cat([o["embedding"] for o in outputs]) if outputs
                 else torch.empty(0, pl_module.embedding_size, device=pl_module.device),
                 "index": torch.cat([o["index"] for o in outputs]) if outputs
                 else torch.empty(0, dtype=torch.long, device=pl_module.device)}
        query = gather_in_order(trainer, local, what="predict")
        gallery, gallery_embeddings = self._gallery
        results = pl_module.searcher(query["embedding"], gallery_embeddings,
                                     gallery_labels=torch.as_tensor(gallery.labels), identity_names=gallery.labels_map)
        inputs = trainer.datamodule.predict_dataset()
        reranker = self._reranker(trainer)
        answers = (RankedAnswers(results, pl_module.open_set_model) if reranker is None
                   else reranker.rerank_predictions(trainer, results, inputs, gallery))
        path = Path(self.output).expanduser() if self.output else run_log_dir(trainer) / "predictions.csv"
        # the photos answered new are grouped by the reranker's fused cut when it has one, else by the model's
        # cosine cut (both chosen on validation)
        is_new = answers.open_set.is_new(answers.results.candidate_scores[:, 0].cpu())
        new_embeddings = query["embedding"][is_new.to(query["embedding"].device)]
        self.discovery = None if reranker is None else reranker.group_new_photos(
            trainer, pl_module, new_embeddings, inputs.get_subset(is_new.numpy()))
        if self.discovery is None and pl_module.open_set_model is not None:
            self.discovery = pl_module.open_set_model.group(new_embeddings)
        if not trainer.is_global_zero:
            return
        self.answers = answers
        frame = prediction_frame(answers, image_ids=inputs.metadata["image_id"].tolist(),
                                 paths=inputs.metadata["path"].tolist(),
                                 gallery_paths=[str(gallery.image_path(i)) for i in range(len(gallery))])
        if self.discovery is not None:
            frame["proposed_identity"] = proposed_identities(frame["identity"], is_new=is_new.numpy(),
                                                             groups=self.discovery.groups)
        self.predictions = frame
        pairs = review_pair_frame(answers, photo_results=self._photo_search(pl_module, query["embedding"]),
                                  photo_model=pl_module.open_set_model)
        self.path = self._write(trainer, path, pairs=pairs, photos=photo_frame(inputs, gallery))
        if self.discovery is not None and self.discovery.num_groups:
            self._write_contact_sheet(inputs, is_new)

    @staticmethod
    def _photo_search(pl_module: L.LightningModule, embeddings: Tensor) -> RetrievalResults | None:
        """Each new photo's nearest other new photos (``REVIEW_NEIGHBOURS``), or None for a single photo."""
        if len(embeddings) < 2:
            return None
        return pl_module.searcher(embeddings, embeddings, leave_one_out=True,
                                  k=min(REVIEW_NEIGHBOURS, len(embeddings) - 1),
                                  gallery_labels=torch.arange(len(embeddings), device=embeddings.device))

    def _write(self, trainer: L.Trainer, path: Path, *, pairs: pd.DataFrame, photos: pd.DataFrame) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        images = getattr(trainer.datamodule, "predict_images", None)
        if images is not None and len(images.unreadable):
            listed = write_new_file(path.with_name("unreadable_images.csv"),
                                    images.unreadable.to_csv(index=False).encode())
            print(f"{len(images.unreadable)} images could not be read and have no prediction; listed in {listed}")
        path = write_new_file(path, self.predictions.to_csv(index=False).encode())
        for suffix, frame in (("pairs", pairs), ("photos", photos)):
            write_new_file(companion_path(path, suffix), frame.to_csv(index=False).encode())
        frame, model = self.predictions, self.answers.open_set
        print(f"{len(frame)} photos: {int((~frame['is_new']).sum())} known individuals, {int(frame['is_new'].sum())} "
              f"new (threshold {model.threshold:.4f} on the {model.score}); confidence = calibrated probability "
              "that the answer is right, score = the raw top-1 score")
        if self.discovery is not None:
            print(f"{self.discovery.num_groups} proposed new individuals among the {int(frame['is_new'].sum())} new "
                  f"photos (proposed_identity; groups joined while their mean similarity is above "
                  f"{self.discovery.threshold:.4f})")
        print(f"predictions written to {path}")
        return path

    def _write_contact_sheet(self, inputs, is_new: Tensor) -> None:
        """``proposed_individuals.png`` beside ``predictions.csv``: one row of photos per proposed individual."""
        import matplotlib

        matplotlib.use("Agg")
        from matplotlib import pyplot as plt

        figure = contact_sheet(self.discovery.groups, dataset=inputs, photos=is_new.nonzero().flatten().numpy())
        target = self.path.with_name("proposed_individuals.png")
        figure.savefig(target, dpi=80, bbox_inches="tight")
        plt.close(figure)
        print(f"proposed individuals pictured in {target}")


def photo_frame(inputs, gallery) -> pd.DataFrame:
    """``predictions_photos.csv``: ``set`` (``new``: the rows of ``predictions.csv`` in order; ``gallery``: the
    known individuals searched), ``image_id``, ``identity`` (``unknown`` for new photos), ``path`` (absolute) and
    ``bbox`` (empty: the whole image)."""
    frames = []
    for name, dataset in (("new", inputs), ("gallery", gallery)):
        metadata = dataset.metadata
        frames.append(pd.DataFrame({
            "set": name, "image_id": metadata["image_id"].astype(str).to_numpy(),
            "identity": dataset.labels_string if name == "gallery" else "unknown",
            "path": [os.path.abspath(dataset.image_path(i)) for i in range(len(dataset))],
            "bbox": [json.dumps(box) if isinstance(box, list) else "" for box in metadata["bbox"]]
            if "bbox" in metadata.columns else ""}))
    return pd.concat(frames, ignore_index=True)


def _per_loader(predictions) -> list[list]:
    """Lightning gives one list of batch outputs, or one per loader with several predict loaders."""
    if predictions and isinstance(predictions[0], list):
        return predictions
    return [predictions or []]
