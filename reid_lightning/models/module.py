"""``ReIDModule``: any backbone + optional projection neck + a metric-learning loss, evaluated by retrieval."""

from __future__ import annotations

from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn

from ..distributed import gather_in_order
from ..eval.embedding import embed_loader
from ..eval.scores import Metric
from ..inference.open_set import (
    OpenSetModel,
    QueryDiscovery,
    discover_unknown_queries,
    fit_open_set,
    open_set_log_values,
)
from ..retrieval import RetrievalResults, Searcher
from .backbone import backbone_data_config, create_backbone, embedding_dim
from .losses import LOSS_NAMES, build_loss
from .neck import ProjectionNeck
from .optim import build_optimizer, build_scheduler, parameter_groups
from .state_files import load_backbone_weights


class ReIDModule(L.LightningModule):
    """Fine-tunes a backbone for re-identification; reports retrieval, open-set and discovery metrics.

    Evaluation loaders: ``[query, gallery]`` or ``[query]`` (leave-one-out), batches with ``image``, ``label``,
    ``index``, optional ``group`` (sequence). At fit, :meth:`setup` reads the data module's ``num_classes`` and
    ``data_config``; the data module asks :attr:`input_config`. Callbacks read :meth:`evaluation_results` and
    :attr:`discovery`."""

    def __init__(
        self, backbone: str = "resnet18", pretrained: bool = True, trust_remote_code: bool = False,
        backbone_init_args: dict | None = None, init_ckpt: str | None = None, num_classes: int | None = None,
        projection_dim: int | None = None, loss: str = "arcface", margin: float | None = None,
        scale: float | None = None, sub_centers: int = 3, miner: str | None = "multi_similarity",
        triplet_margin: float = 0.2, optimizer: dict | None = None, lr_scheduler: dict | None = None,
        backbone_lr_scale: float = 1.0, weight_decay_norm_bias: bool = True, metric: Metric = "cosine",
        top_k: tuple[int, ...] = (1, 5), candidates: int = 100, eval_chunk_size: int | None = None,
        search_backend: Literal["torch", "faiss", "faiss-ivf", "faiss-hnsw"] = "torch", exact_metrics: bool = True,
        channels_last: bool = False, compile: bool = False, open_set_threshold: float | None = None,
        open_set_holdout: float = 0.2, discovery_threshold: float | None = None,
    ) -> None:
        """
        Args:
            backbone: timm name (incl. ``hf-hub:...``/``local-dir:/path``), ``transformers:<id or folder>``, a class path.
            pretrained: load the backbone's pretrained weights.
            trust_remote_code: let transformers run the model's own code (MiewID needs it); off by default.
            backbone_init_args: extra constructor arguments for the backbone.
            init_ckpt: checkpoint or state dict whose backbone/neck weights (not the loss head) initialise this model.
            num_classes: training identities (None: the data module's ``num_classes``, read at fit).
            projection_dim: add a linear projection neck to this embedding size (None: backbone's own size).
            loss: ``arcface``, ``subcenter_arcface``, ``triplet`` or ``softmax``.
            margin: ArcFace angular margin in radians (None: 0.5 as in MegaDescriptor).
            scale: ArcFace logit scale (None: 64 as in MegaDescriptor).
            sub_centers: weight vectors per class for ``subcenter_arcface``.
            miner: pytorch-metric-learning miner for ``triplet``.
            triplet_margin: margin of the triplet loss.
            optimizer: class path + init args of any torch optimizer (CLI ``--optimizer``; None: SGD lr 1e-3, m 0.9).
            lr_scheduler: class path + init args of a per-step scheduler (CLI ``--lr_scheduler``), or None.
            backbone_lr_scale: backbone learning rate = this x the optimizer's (neck and loss weights: the optimizer's).
            weight_decay_norm_bias: apply weight decay to normalisation weights and biases too (False: excluded).
            metric: query x gallery score: ``cosine``, ``inner``, ``euclid`` or ``sq_euclid``.
            top_k: the k of every top-k accuracy logged.
            candidates: gallery candidates kept per query (evaluation, prediction, reranking shortlists at most).
            eval_chunk_size: queries scored at once (None: about 8M scores per chunk; bounds memory).
            search_backend: ``torch`` (exact), ``faiss`` (exact flat), ``faiss-ivf``/``faiss-hnsw`` (approximate).
            exact_metrics: False: mAP/maxF1 of the top-``candidates`` only, logged as ``mAP@K``/``maxF1@K``.
            channels_last: run the backbone in channels-last memory format.
            compile: ``torch.compile`` the backbone's forward (checkpoints keep the plain module's names).
            open_set_threshold: fixed top-1 score below which a query is "new" (None: chosen on validation).
            open_set_holdout: share of validation identities held out of the gallery to choose the threshold.
            discovery_threshold: fixed cosine cut grouping new photos into individuals (None: chosen on validation).
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
        self.num_classes = num_classes
        self.loss_fn: nn.Module | None = self._build_loss(num_classes) if num_classes or loss == "triplet" else None
        if init_ckpt:
            load_backbone_weights(self, init_ckpt)
        if channels_last:
            self.backbone.to(memory_format=torch.channels_last)
        self._compiled_backbone = None
        self._outputs: dict[int, list[dict[str, Tensor]]] = {}
        self._evaluation: RetrievalResults | None = None
        self._query_embeddings: Tensor | None = None
        self.trained_input_config: dict | None = None
        """Input ``size``/``mean``/``std`` of the training run (recorded at fit, saved in checkpoints)."""
        self.open_set: OpenSetModel | None = None
        self._cautions_given: set[str] = set()  # each caution once per run, not at every validation
        """Threshold, confidence calibration and discovery cut chosen on the last validation (in checkpoints)."""
        self.discovery: QueryDiscovery | None = None
        """The last evaluation's queries of identities absent from the gallery, grouped at the discovery cut."""

    # ------------------------------------------------------------------ model
    @property
    def input_config(self) -> dict:
        """``size``, ``mean``, ``std`` the model expects: the training run's, else the backbone's."""
        return dict(self.trained_input_config or backbone_data_config(self.backbone))

    def forward(self, images: Tensor) -> Tensor:
        """images: (B, 3, H, W) -> embeddings (B, D)."""
        if self.hparams.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        if self.hparams.compile and self._compiled_backbone is None:
            # kept outside the module tree, so state dicts and checkpoints keep the plain parameter names
            object.__setattr__(self, "_compiled_backbone", torch.compile(self.backbone))
        backbone = self.backbone if self._compiled_backbone is None else self._compiled_backbone
        return self.neck(backbone(images))

    def _build_loss(self, num_classes: int | None) -> nn.Module:
        hp = self.hparams
        return build_loss(hp.loss, num_classes=num_classes or 1, embedding_dim=self.embedding_size, margin=hp.margin,
                          scale=hp.scale, sub_centers=hp.sub_centers, miner=hp.miner, triplet_margin=hp.triplet_margin)

    # ------------------------------------------------------------------ training
    def setup(self, stage: str) -> None:
        if stage != "fit":
            return
        datamodule = self.trainer.datamodule
        self.trained_input_config = dict(datamodule.data_config) if hasattr(datamodule, "data_config") else None
        if self.loss_fn is None:
            self.num_classes = getattr(datamodule, "num_classes", None)
            if not self.num_classes:
                raise ValueError("num_classes is unknown: pass --model.num_classes or train with ReIDDataModule")
            self.loss_fn = self._build_loss(self.num_classes)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.loss_fn(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(batch["label"]),
                 sync_dist=True)  # averaged over processes, so every rank logs (and a monitor sees) the same value
        return loss

    def configure_optimizers(self):
        head = [self.neck] + ([self.loss_fn] if self.loss_fn is not None else [])
        groups = parameter_groups(backbone=self.backbone, head=head, backbone_lr_scale=self.hparams.backbone_lr_scale,
                                  weight_decay_norm_bias=self.hparams.weight_decay_norm_bias)
        optimizer = build_optimizer(self.hparams.optimizer, groups)
        scheduler = build_scheduler(self.hparams.lr_scheduler, optimizer, int(self.trainer.estimated_stepping_batches))
        return optimizer if scheduler is None else {"optimizer": optimizer, "lr_scheduler": scheduler}

    # ------------------------------------------------------------------ evaluation
    def _collect(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        labels = batch["label"]
        self._outputs.setdefault(dataloader_idx, []).append({
            "embedding": self(batch["image"]).float(), "label": labels, "index": batch["index"],
            "group": batch.get("group", torch.full_like(labels, -1))})

    validation_step = test_step = _collect

    def on_validation_epoch_start(self) -> None:
        self._outputs, self._evaluation, self._query_embeddings = {}, None, None

    on_test_epoch_start = on_validation_epoch_start

    def evaluation_results(self) -> RetrievalResults:
        """The :class:`RetrievalResults` of the current validation/test epoch: every process's embeddings gathered
        in dataset order, loader 0 (queries) searched in loader 1 (gallery) or, in leave-one-out, among the other
        queries. Computed once per epoch on the first call after the last batch (a collective: call it on every
        process, from an ``on_*_epoch_end`` or later hook), the same object afterwards until the next epoch."""
        if self._evaluation is None:
            query = self._gathered(0)
            self._query_embeddings = query["embedding"]
            leave_one_out = 1 not in self._outputs
            gallery = query if leave_one_out else self._gathered(1)
            self._evaluation = self.searcher(
                query["embedding"], gallery["embedding"], query_labels=query["label"], gallery_labels=gallery["label"],
                query_groups=query["group"], gallery_groups=gallery["group"], leave_one_out=leave_one_out,
                identity_names=getattr(getattr(self._trainer, "datamodule", None), "identity_names", None))
        return self._evaluation

    def _gathered(self, dataloader_idx: int) -> dict[str, Tensor]:
        outputs = self._outputs.get(dataloader_idx)
        if not outputs:
            raise ValueError(f"evaluation loader {dataloader_idx} yielded no batch")
        return gather_in_order(self._trainer, {name: torch.cat([o[name] for o in outputs]) for name in outputs[0]},
                               what=f"evaluation loader {dataloader_idx}")

    def on_validation_epoch_end(self) -> None:
        results = self.evaluation_results()
        if not self.trainer.sanity_checking:
            self._choose_open_set(results)
        self._log_evaluation("val", results)

    def on_test_epoch_end(self) -> None:
        self._log_evaluation("test", self.evaluation_results())

    def _log_evaluation(self, prefix: str, results: RetrievalResults) -> None:  # identical on every process
        for name, value in results.metrics(top_k=self.hparams.top_k).items():
            self.log(f"{prefix}/{name}", float(value), prog_bar=name in ("top1", "mAP"), sync_dist=False)
        self.discovery = discover_unknown_queries(results, self.open_set_model, self._query_embeddings)
        for name, value in open_set_log_values(results, self.open_set_model, self.discovery).items():
            self.log(f"{prefix}/{name}", value, sync_dist=False)

    # ------------------------------------------------------------------ open set
    @property
    def open_set_model(self) -> OpenSetModel | None:
        """The open-set model answers are decided (and new photos grouped) with: the validation-chosen one, with
        ``open_set_threshold`` / ``discovery_threshold`` replacing its cuts when given."""
        fixed, cut = self.hparams.get("open_set_threshold"), self.hparams.get("discovery_threshold")
        model = self.open_set or (None if fixed is None else OpenSetModel(None, f"top-1 {self.hparams.metric} score"))
        return None if model is None else model.with_overrides(threshold=fixed, discovery_threshold=cut)

    @property
    def threshold(self) -> float | None:
        """Top-1 score below which a query is answered "new individual" (None before any validation)."""
        return getattr(self.open_set_model, "threshold", None)

    def _choose_open_set(self, results: RetrievalResults) -> None:
        self.open_set = fit_open_set(results, score=f"top-1 {self.hparams.metric} score", seed=self.current_epoch,
                                     holdout=self.hparams.open_set_holdout, embeddings=self._query_embeddings)
        if self.open_set.threshold is not None:
            self.log("val/open/threshold", self.open_set.threshold, sync_dist=False)
            self.log("val/open/choice_gmean", self.open_set.validation_gmean, sync_dist=False)
        (rank_zero_info if self.open_set.threshold is not None else rank_zero_warn)(
            self.open_set.summary(results.num_queries))
        caution = self.open_set.caution()
        if caution is not None and caution not in self._cautions_given:
            self._cautions_given.add(caution)
            rank_zero_warn(caution)
        for name, interval in (("threshold", self.open_set.threshold_interval),
                               ("discovery_cut", self.open_set.discovery_interval)):
            if interval is not None:
                self.log(f"val/open/{name}_low", interval[0], sync_dist=False)
                self.log(f"val/open/{name}_high", interval[1], sync_dist=False)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["open_set"] = None if self.open_set is None else self.open_set.to_dict()
        checkpoint["input_config"] = self.trained_input_config
        checkpoint["num_classes"] = self.num_classes

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        self.open_set = OpenSetModel.from_dict(checkpoint["open_set"]) if checkpoint.get("open_set") else None
        self.trained_input_config = checkpoint.get("input_config")
        if self.loss_fn is None and checkpoint.get("num_classes"):
            self.num_classes = checkpoint["num_classes"]
            self.loss_fn = self._build_loss(self.num_classes)

    # ------------------------------------------------------------------ search and embedding
    @property
    def searcher(self) -> Searcher:
        """:func:`~reid_lightning.retrieval.search` with this model's metric, candidates, backend and chunking."""
        hp = self.hparams
        return Searcher(hp.metric, hp.candidates, hp.eval_chunk_size, hp.search_backend, hp.exact_metrics)

    def embed(self, loader, *, description: str = "embedding", progress: bool = False) -> tuple[Tensor, Tensor | None]:
        """Embeddings ``(N, D)`` and labels of a loader in order, in eval mode under the trainer's precision."""
        context = self.trainer.precision_plugin.forward_context if self._trainer is not None else None
        return embed_loader(self, loader, device=self.device, context=context, progress=progress,
                            description=description)

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> dict[str, Tensor]:
        """``{"embedding": (B, D), "index": (B,)}`` of the new photos (a prediction writer does the rest)."""
        return {"embedding": self(batch["image"]).float(), "index": batch["index"]}
