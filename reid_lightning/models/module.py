"""``ReIDModule``: any backbone + optional projection neck + a metric-learning loss, evaluated by retrieval."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import lightning as L
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from ..eval.embedding import embed_loader
from ..eval.scores import Metric
from ..inference.gallery_cache import GalleryCache, gallery_cache_key
from ..inference.predictions import PredictionReranker, RankedAnswers, prediction_frame
from ..inference.threshold import held_out_gallery_identities, top1_decision_inputs
from ..metrics.open_set import choose_threshold, open_set_metrics
from ..retrieval import Exclusion, RetrievalResults, search
from .backbone import backbone_data_config, create_backbone, embedding_dim
from .losses import LOSS_NAMES, build_loss
from .neck import ProjectionNeck
from .state_files import load_state_dict_file

Protocol = Literal["database", "leave_one_out"]


class ReIDModule(L.LightningModule):
    """Fine-tunes a backbone for re-identification and reports top-k accuracy, mAP and maxF1.

    Validation/test loaders come from ``ReIDDataModule``: ``[query_loader, gallery_loader]`` (``database``
    protocol: gallery = training images) or ``[query_loader]`` (``leave_one_out``: each query against all other
    query images, itself excluded). Batches are dicts with ``image``, ``label``, ``index`` and optionally
    ``group`` (camera-trap sequence code, -1 for none: gallery images of a query's own sequence are excluded).
    """

    def __init__(
        self,
        backbone: str = "resnet18",
        pretrained: bool = True,
        trust_remote_code: bool = False,
        backbone_init_args: dict | None = None,
        init_ckpt: str | None = None,
        num_classes: int | None = None,
        projection_dim: int | None = None,
        loss: str = "arcface",
        margin: float | None = None,
        scale: float | None = None,
        sub_centers: int = 3,
        miner: str | None = "multi_similarity",
        triplet_margin: float = 0.2,
        optimizer: Literal["sgd", "adamw"] = "sgd",
        lr: float = 1e-3,
        loss_lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        scheduler: Literal["cosine", "none"] = "cosine",
        metric: Metric = "cosine",
        top_k: tuple[int, ...] = (1, 5),
        candidates: int = 100,
        eval_chunk_size: int | None = None,
        search_backend: Literal["torch", "faiss", "faiss-ivf", "faiss-hnsw"] = "torch",
        exact_metrics: bool = True,
        channels_last: bool = False,
        compile: bool = False,
        open_set_threshold: float | None = None,
        open_set_holdout: float = 0.2,
    ) -> None:
        """
        Args:
            backbone: timm name (incl. ``hf-hub:...`` / ``local-dir:/path``), ``transformers:<id or folder>``, or
                a ``package.Class`` path; see ``create_backbone``.
            pretrained: load the backbone's pretrained weights.
            trust_remote_code: let transformers run the model's own code (MiewID needs it); off by default.
            backbone_init_args: extra constructor arguments for the backbone.
            init_ckpt: checkpoint (Lightning ``.ckpt`` or a state dict) whose backbone/neck weights initialise this
                model; the loss head is not loaded, so a new species with new identities can be fine-tuned.
            num_classes: number of training identities (set from the data module by the CLI).
            projection_dim: add a linear projection neck to this embedding size (None: backbone's own size).
            loss: ``arcface``, ``subcenter_arcface``, ``triplet`` or ``softmax``.
            margin: ArcFace angular margin in radians (None: 0.5 as in MegaDescriptor).
            scale: ArcFace logit scale (None: 64 as in MegaDescriptor).
            sub_centers: weight vectors per class for ``subcenter_arcface``.
            miner: pytorch-metric-learning miner for ``triplet``.
            triplet_margin: margin of the triplet loss.
            optimizer: ``sgd`` (MegaDescriptor recipe) or ``adamw``.
            lr: learning rate of the backbone and neck.
            loss_lr: learning rate of the loss parameters (None: same as ``lr``).
            momentum: SGD momentum.
            weight_decay: weight decay.
            scheduler: ``cosine`` annealing over all training steps, or ``none``.
            metric: query x gallery score: ``cosine``, ``inner``, ``euclid`` or ``sq_euclid``.
            top_k: the k of every top-k accuracy logged.
            candidates: gallery candidates kept per query in the evaluation results (a reranking callback raises
                it to its shortlist); the logged metrics always rank the whole gallery.
            eval_chunk_size: queries scored at once during evaluation (None: about 8M scores per chunk; bounds
                memory).
            search_backend: ``torch`` (exact, chunked), ``faiss`` (exact flat index), ``faiss-ivf``/``faiss-hnsw``
                (approximate candidates, rescored exactly); the logged metrics rank the whole gallery exactly with
                every backend.
            exact_metrics: False computes mAP/maxF1 from the top-``candidates`` only, logged as
                ``mAP@<candidates>``/``maxF1@<candidates>`` (lower bounds; top-k accuracies stay exact), so no full
                score row is computed: for galleries of millions with an approximate ``search_backend``. The
                checkpoint then monitors ``val/mAP@<candidates>`` (train.py switches its default monitor).
            channels_last: run the backbone in channels-last memory format (faster convolutions on recent GPUs
                and CPUs, especially with mixed precision).
            compile: ``torch.compile`` the backbone's forward (weights and checkpoints stay those of the plain
                module); the first batches are slower while it compiles.
            open_set_threshold: fixed score below which a query is answered "new individual" (None: the threshold
                chosen on the validation queries, saved with the checkpoint).
            open_set_holdout: when no validation query is of an identity absent from the gallery, this fraction of
                the validation identities is removed from the gallery while the threshold is chosen.
        """
        super().__init__()
        if loss not in LOSS_NAMES:
            raise ValueError(f"Unknown loss {loss!r}; valid names: {', '.join(LOSS_NAMES)}")
        if not exact_metrics and max(top_k, default=1) > candidates:
            raise ValueError(f"exact_metrics=False computes metrics from the top-{candidates} candidates, but "
                             f"top_k={list(top_k)} asks for more: raise --model.candidates")
        self.save_hyperparameters()
        self.backbone = create_backbone(backbone, pretrained=pretrained, trust_remote_code=trust_remote_code,
                                        init_args=backbone_init_args)
        backbone_dim = embedding_dim(self.backbone)
        self.neck = ProjectionNeck(backbone_dim, projection_dim) if projection_dim else nn.Identity()
        self.embedding_size = projection_dim or backbone_dim
        self.loss_fn: nn.Module | None = None
        if num_classes is not None or loss == "triplet":
            self.loss_fn = build_loss(loss, num_classes=num_classes or 1, embedding_dim=self.embedding_size,
                                      margin=margin, scale=scale, sub_centers=sub_centers, miner=miner,
                                      triplet_margin=triplet_margin)
        if init_ckpt:
            self._load_init_checkpoint(init_ckpt)
        self._required_candidates = 0
        self._compiled_backbone = None
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self._eval_outputs: dict[int, list[dict[str, Tensor]]] = {}
        self._evaluation: RetrievalResults | None = None
        self._evaluation_inputs: tuple[dict[str, Tensor], dict[str, Tensor]] | None = None
        self.chosen_threshold: float | None = None
        """Open-set threshold chosen on the last validation (saved in checkpoints); see :attr:`threshold`."""
        self.predictions: pd.DataFrame | None = None
        """``predictions.csv`` rows of the last predict run (on the global-zero process)."""
        self.answers: RankedAnswers | None = None
        """The ranked candidates, threshold and score those rows were formed from (on the global-zero process)."""

    # ------------------------------------------------------------------ model
    @property
    def data_config(self) -> dict:
        """``size``, ``mean``, ``std`` the backbone expects."""
        return backbone_data_config(self.backbone)

    def forward(self, images: Tensor) -> Tensor:
        """images: (B, 3, H, W) -> embeddings (B, D)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.neck(self._backbone_forward(images))

    @property
    def _backbone_forward(self):
        if not self.hparams.compile:
            return self.backbone
        if self._compiled_backbone is None:
            # kept outside the module tree, so state dicts and checkpoints keep the plain parameter names
            object.__setattr__(self, "_compiled_backbone", torch.compile(self.backbone))
        return self._compiled_backbone

    def _load_init_checkpoint(self, path: str) -> None:
        checkpoint_path = Path(path).expanduser()
        if not checkpoint_path.is_file():
            raise FileNotFoundError(f"init_ckpt {path!r} does not exist; give a Lightning .ckpt or a state dict")
        state = load_state_dict_file(checkpoint_path, what="init_ckpt")
        wanted = {k: v for k, v in state.items() if k.startswith(("backbone.", "neck."))}
        if not wanted:
            # a bare backbone state dict (e.g. timm weights)
            wanted = {f"backbone.{k}": v for k, v in state.items()}
        own = self.state_dict()
        mismatched = [k for k, v in wanted.items() if k in own and own[k].shape != v.shape]
        if mismatched:
            raise ValueError(f"init_ckpt {path!r}: shapes differ for {mismatched[:5]}; is it the same backbone?")
        result = self.load_state_dict(wanted, strict=False)
        missing = [k for k in result.missing_keys if k.startswith(("backbone.", "neck."))]
        if missing:
            raise ValueError(f"init_ckpt {path!r} lacks {len(missing)} backbone/neck weights, e.g. {missing[:5]}")

    # ------------------------------------------------------------------ training
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None and hasattr(datamodule, "set_data_config"):
            datamodule.set_data_config(**self.data_config)
        if stage == "fit" and self.loss_fn is None:
            num_classes = getattr(datamodule, "num_classes", None)
            if not num_classes:
                raise ValueError("num_classes is unknown: pass --model.num_classes or train with ReIDDataModule")
            self.hparams.num_classes = num_classes
            self.loss_fn = build_loss(self.hparams.loss, num_classes=num_classes, embedding_dim=self.embedding_size,
                                      margin=self.hparams.margin, scale=self.hparams.scale,
                                      sub_centers=self.hparams.sub_centers, miner=self.hparams.miner,
                                      triplet_margin=self.hparams.triplet_margin)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss_fn(self(batch["image"]), batch["label"])
        # averaged over processes, so every rank logs (and a monitor sees) the same value
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["label"]),
                 sync_dist=True)
        return loss

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": [p for p in [*self.backbone.parameters(), *self.neck.parameters()] if p.requires_grad],
                   "lr": hp.lr}]
        loss_parameters = list(self.loss_fn.parameters()) if self.loss_fn is not None else []
        if loss_parameters:
            groups.append({"params": loss_parameters, "lr": hp.loss_lr or hp.lr})
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        elif hp.optimizer == "adamw":
            optimizer = torch.optim.AdamW(groups, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            raise ValueError(f"Unknown optimizer {hp.optimizer!r}; choose 'sgd' or 'adamw'")
        if hp.scheduler == "none":
            return optimizer
        if hp.scheduler != "cosine":
            raise ValueError(f"Unknown scheduler {hp.scheduler!r}; choose 'cosine' or 'none'")
        total_steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------ evaluation
    def _collect(self, batch: dict[str, Tensor], dataloader_idx: int) -> None:
        labels = batch["label"]
        self._eval_outputs.setdefault(dataloader_idx, []).append({
            "embedding": self(batch["image"]).float(),
            "label": labels,
            "index": batch["index"],
            "group": batch.get("group", torch.full_like(labels, -1)),
        })

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        self._collect(batch, dataloader_idx)

    def on_validation_epoch_start(self) -> None:
        self._reset_evaluation()

    def on_test_epoch_start(self) -> None:
        self._reset_evaluation()

    def on_validation_epoch_end(self) -> None:
        results = self.evaluation_results()
        self._log_metrics("val", results)
        if self.hparams.open_set_threshold is None and not self.trainer.sanity_checking:
            self._choose_threshold(results)
        self._log_open_set("val", results)

    def on_test_epoch_end(self) -> None:
        results = self.evaluation_results()
        self._log_metrics("test", results)
        self._log_open_set("test", results)

    def _reset_evaluation(self) -> None:
        self._eval_outputs = {}
        self._evaluation = None
        self._evaluation_inputs = None

    # ------------------------------------------------------------------ open set
    @property
    def threshold(self) -> float | None:
        """Score below which a query is answered "new individual": ``open_set_threshold`` when given, else the one
        chosen on validation (None before any validation)."""
        fixed = self.hparams.get("open_set_threshold")
        return float(fixed) if fixed is not None else self.chosen_threshold

    def _choose_threshold(self, results: RetrievalResults) -> None:
        """Choose the threshold maximising sqrt(BAKS * BAUS) on the validation queries; without unknown queries,
        on the same queries with ``open_set_holdout`` of their identities removed from the gallery."""
        inputs = top1_decision_inputs(results)
        held_out = ""
        if inputs["known"].all():
            if self._evaluation_inputs is None or self._evaluation_inputs[0] is self._evaluation_inputs[1]:
                rank_zero_warn("no validation query is of an identity absent from the gallery and the protocol is "
                               "leave_one_out: no open-set threshold chosen (pass --model.open_set_threshold)")
                return
            query, gallery = self._evaluation_inputs
            keep = held_out_gallery_identities(query_labels=query["label"], gallery_labels=gallery["label"],
                                               fraction=self.hparams.open_set_holdout, seed=self.current_epoch)
            keep = keep.to(gallery["label"].device)
            held = self.search(query["embedding"], gallery["embedding"][keep], query_labels=query["label"],
                               gallery_labels=gallery["label"][keep], query_groups=query["group"],
                               gallery_groups=gallery["group"][keep], k=1)
            inputs = top1_decision_inputs(held)
            held_out = (f" with {len(torch.unique(gallery['label'][~keep]))} validation identities held out of the "
                        "gallery (no validation query was of an unknown identity)")
        if inputs["known"].all() or not inputs["known"].any():
            rank_zero_warn("the validation queries are all known or all unknown: no open-set threshold chosen")
            return
        self.chosen_threshold, gmean = choose_threshold(**inputs)
        self.log("val/open/threshold", self.chosen_threshold, sync_dist=False)
        self.log("val/open/choice_gmean", gmean, sync_dist=False)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            rank_zero_info(f"open-set threshold {self.chosen_threshold:.4f} (top-1 {self.hparams.metric} score) "
                           f"chosen on {len(inputs['known'])} validation queries{held_out}: "
                           f"sqrt(BAKS*BAUS) = {gmean:.4f}")

    def _log_open_set(self, prefix: str, results: RetrievalResults) -> None:
        """``<prefix>/open/*`` when some queries are of identities absent from the gallery."""
        inputs = top1_decision_inputs(results)
        if inputs["known"].all():
            return
        for name, value in open_set_metrics(**inputs, threshold=self.threshold).items():
            if not math.isnan(value):
                self.log(f"{prefix}/open/{name}", value, sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["open_set_threshold"] = self.chosen_threshold

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.chosen_threshold = checkpoint.get("open_set_threshold")

    def _log_metrics(self, prefix: str, results: RetrievalResults) -> None:
        for name, value in results.metrics(top_k=self.hparams.top_k).items():
            # every process holds all embeddings and computes identical values: no further reduction
            self.log(f"{prefix}/{name}", float(value), prog_bar=name in ("top1", "mAP"), sync_dist=False)

    def require_candidates(self, k: int) -> None:
        """Keep at least ``k`` candidates per query in the evaluation results (e.g. a reranking shortlist)."""
        if not self.hparams.exact_metrics and k > self.hparams.candidates:
            # the metrics' depth (and so their logged names) must not depend on the callbacks attached
            raise ValueError(f"a shortlist of {k} candidates is needed but exact_metrics=False computes metrics "
                             f"from the top-{self.hparams.candidates}: pass --model.candidates {k} or more")
        self._required_candidates = max(self._required_candidates, k)

    def _gathered(self, dataloader_idx: int) -> dict[str, Tensor]:
        """Embeddings, labels and groups of one eval loader in dataset order, gathered over processes,
        duplicates (from padded distributed samplers) removed."""
        outputs = self._eval_outputs.get(dataloader_idx, [])
        if not outputs:
            raise ValueError(f"evaluation loader {dataloader_idx} yielded no batch")
        gathered = {name: torch.cat([o[name] for o in outputs]) for name in outputs[0]}
        if self._trainer is not None and self.trainer.world_size > 1:
            gathered = {name: self.all_gather(t).flatten(0, 1) for name, t in gathered.items()}
        indices = gathered["index"]
        order = torch.argsort(indices, stable=True)
        indices = indices[order]
        first = torch.ones_like(indices, dtype=torch.bool)
        first[1:] = indices[1:] != indices[:-1]
        if not torch.equal(indices[first], torch.arange(int(first.sum()), device=indices.device)):
            raise RuntimeError(f"evaluation loader {dataloader_idx} did not cover its dataset exactly once")
        return {name: t[order][first] for name, t in gathered.items()}

    def evaluation_results(self) -> RetrievalResults:
        """Retrieval results of the current validation/test epoch, computed once and cached.

        Loader 0 holds the queries; loader 1, when present, the gallery (``database`` protocol), otherwise every
        query is searched among the other queries (``leave_one_out``, itself excluded). Callbacks such as
        reranking call this from their own epoch-end hook; the module logs ``results.metrics()``.
        """
        if self._evaluation is not None:
            return self._evaluation
        query = self._gathered(0)
        leave_one_out = 1 not in self._eval_outputs
        gallery = query if leave_one_out else self._gathered(1)
        self._eval_outputs = {}
        self._evaluation_inputs = (query, gallery)
        self._evaluation = self.search(
            query["embedding"], gallery["embedding"], query_labels=query["label"], gallery_labels=gallery["label"],
            query_groups=query["group"], gallery_groups=gallery["group"], leave_one_out=leave_one_out)
        return self._evaluation

    def search(self, query: Tensor, gallery: Tensor, *, query_labels: Tensor, gallery_labels: Tensor,
               query_groups: Tensor | None = None, gallery_groups: Tensor | None = None,
               leave_one_out: bool = False, k: int | None = None) -> RetrievalResults:
        """:func:`~reid_lightning.retrieval.search` with this model's metric and chunking: query ``(Q, D)`` against
        gallery ``(G, D)``, the query itself excluded in leave-one-out and, with groups, every gallery image of
        the query's own group (sequence)."""
        exclusion = Exclusion.self_pairs(len(query)) if leave_one_out else None
        if query_groups is not None and gallery_groups is not None:
            exclusion = Exclusion.same_group(query_groups=query_groups, gallery_groups=gallery_groups).union(exclusion)
        datamodule = getattr(self._trainer, "datamodule", None) if self._trainer is not None else None
        k = k or max(self.hparams.candidates, self._required_candidates)
        return search(query, gallery, k=k, metric=self.hparams.metric, exclude=exclusion, query_labels=query_labels,
                      gallery_labels=gallery_labels, identity_names=getattr(datamodule, "identity_names", None),
                      chunk_size=self.hparams.eval_chunk_size, backend=self.hparams.search_backend,
                      exact_metrics=self.hparams.exact_metrics)

    def embed(self, loader) -> tuple[Tensor, Tensor | None]:
        """Embeddings ``(N, D)`` and labels of a loader in its order, in eval mode and under the trainer's
        precision context, so they equal the ones the validation/test loops compute."""
        context = None
        if self._trainer is not None:
            context = self.trainer.precision_plugin.forward_context
        return embed_loader(self, loader, device=self.device, context=context, progress=False)

    # ------------------------------------------------------------------ prediction
    def on_predict_start(self) -> None:
        datamodule = getattr(self.trainer, "datamodule", None)
        if not hasattr(datamodule, "predict_gallery"):
            raise TypeError("predict needs a ReIDDataModule (its gallery of known individuals)")
        if self.threshold is None and self._prediction_reranker() is None:
            raise ValueError("no open-set threshold: the checkpoint holds none (it was trained without validation "
                             "queries); pass --model.open_set_threshold <score>")
        gallery = datamodule.predict_gallery()
        self._predict_gallery = (gallery, self._gallery_embeddings(gallery, datamodule))
        self._predict_outputs: list[dict[str, Tensor]] = []
        self.predictions = self.answers = None

    def _prediction_reranker(self) -> PredictionReranker | None:
        """The trainer's callback that reranks the new photos' candidates (e.g. ``LocalFeatureReranking``)."""
        rerankers = [c for c in self.trainer.callbacks if isinstance(c, PredictionReranker)]
        if len(rerankers) > 1:
            raise ValueError(f"{len(rerankers)} callbacks rerank predictions "
                             f"({', '.join(type(c).__name__ for c in rerankers)}): keep one")
        return rerankers[0] if rerankers else None

    def _gallery_embeddings(self, gallery, datamodule) -> Tensor:
        """``(G, D)`` embeddings of the gallery, read from ``datamodule.gallery_cache`` when cached there."""
        folder = getattr(datamodule, "gallery_cache", None)
        cache = GalleryCache(folder) if folder else None
        key = gallery_cache_key(self, gallery) if cache is not None else ""
        cached = cache.load(key, len(gallery)) if cache is not None else None
        if cached is not None:
            rank_zero_info(f"gallery embeddings of {len(gallery)} images read from {cache.path(key)}")
            return cached.to(self.device)
        loader = datamodule._eval_loader(gallery)
        embeddings, _ = embed_loader(self, loader, device=self.device,
                                     context=self.trainer.precision_plugin.forward_context,
                                     progress=self.trainer.is_global_zero, description="embedding gallery")
        if cache is not None and self.trainer.is_global_zero:
            rank_zero_info(f"gallery embeddings cached in {cache.save(key, embeddings)}")
        return embeddings

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        # kept here (not returned) so that on_predict_epoch_end can gather every process's share
        self._predict_outputs.append({"embedding": self(batch["image"]).float(), "index": batch["index"]})

    def on_predict_epoch_end(self) -> None:
        """Gather the new photos' embeddings of every process, search them in the gallery and, on the global-zero
        process, rerank them when a callback does (:class:`PredictionReranker`) and build :attr:`predictions`
        (every input once, in input order)."""
        query = self._gathered_predictions()
        gallery, gallery_embeddings = self._predict_gallery
        k = min(len(gallery), max(100, self._required_candidates))
        results = search(query["embedding"], gallery_embeddings, k=k, metric=self.hparams.metric,
                         gallery_labels=torch.as_tensor(gallery.labels), identity_names=gallery.labels_map,
                         chunk_size=self.hparams.eval_chunk_size, backend=self.hparams.search_backend)
        # reranking holds no collective call: the global-zero process alone reranks and writes every input
        if self.trainer.is_global_zero:
            inputs = self.trainer.datamodule.predict_dataset()
            reranker = self._prediction_reranker()
            if reranker is None:
                answers = RankedAnswers(results, threshold=self.threshold, score=f"top-1 {self.hparams.metric} score")
            else:
                answers = reranker.rerank_predictions(results, inputs, gallery)
            self.answers = answers
            self.predictions = prediction_frame(
                answers.results, paths=[str(inputs.image_path(i)) for i in range(len(inputs))],
                gallery_paths=[str(gallery.image_path(i)) for i in range(len(gallery))], threshold=answers.threshold)
        self._predict_outputs = []

    def _gathered_predictions(self) -> dict[str, Tensor]:
        """Predict outputs of all processes in input order; the shares may differ in size (Lightning's predict
        sampler does not pad), so they are padded for the gather and the padding dropped."""
        outputs = self._predict_outputs or [{"embedding": torch.empty(0, self.embedding_size, device=self.device),
                                             "index": torch.empty(0, dtype=torch.long, device=self.device)}]
        local = {name: torch.cat([o[name] for o in outputs]) for name in ("embedding", "index")}
        if self.trainer.world_size > 1:
            count = torch.tensor([len(local["index"])], device=self.device)
            size = int(self.all_gather(count).max())
            padded = {
                "embedding": torch.cat([local["embedding"], local["embedding"].new_zeros(
                    size - len(local["index"]), local["embedding"].shape[1])]),
                "index": torch.cat([local["index"], local["index"].new_full((size - len(local["index"]),), -1)]),
            }
            local = {name: self.all_gather(t).flatten(0, 1) for name, t in padded.items()}
        real = local["index"] >= 0
        local = {name: t[real] for name, t in local.items()}
        order = torch.argsort(local["index"])
        if not torch.equal(local["index"][order], torch.arange(len(order), device=order.device)):
            raise RuntimeError("the predict loaders of the processes did not cover the inputs exactly once")
        return {name: t[order] for name, t in local.items()}
