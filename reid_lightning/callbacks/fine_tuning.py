"""Fine-tuning a pretrained backbone: the zero-shot baseline every fit is compared with, a frozen start, and a loss
head that starts at the class means."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from ..interrupt import shows_progress

ZERO_SHOT_PREFIX = "val/zero_shot/"
BATCH_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


class ZeroShotBaseline(Callback):
    """Logs the validation metrics of the model as it starts a fit (``val/zero_shot/top1``, ``.../mAP``, ...), before
    any training step, and warns at the end when the fine-tuned model is worse than that start on ``monitor``: a
    fine-tune that ends below zero-shot is a failed recipe (learning rate too high, too few epochs, ...).

    The metrics are those of ``validate`` on the same images (the module's own embedding, search and metrics);
    skipped when resuming a run (the start was measured by the run resumed) and without validation images.
    """

    def __init__(self, enabled: bool = True, monitor: str = "val/mAP") -> None:
        """
        Args:
            enabled: measure the zero-shot baseline at the start of ``fit``.
            monitor: the metric compared at the end of ``fit`` with its zero-shot value.
        """
        self.enabled = enabled
        self.monitor = monitor
        self.metrics: dict[str, float] = {}
        """The zero-shot validation metrics of the last fit (names without the ``val/`` prefix)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics = {}
        if not self.enabled or trainer.global_step > 0 or not hasattr(trainer.datamodule, "val_dataloader"):
            return
        loaders = trainer.datamodule.val_dataloader()
        if not loaders:
            return
        results, _ = pl_module.searcher.loaders(pl_module.embed, loaders, trainer.datamodule.eval_groups("val"),
                                                phase="zero-shot (validation)", progress=shows_progress(trainer))
        self.metrics = {name: float(value) for name, value in results.metrics(top_k=pl_module.hparams.top_k).items()}
        for name, value in self.metrics.items():
            pl_module.log(f"{ZERO_SHOT_PREFIX}{name}", value, sync_dist=False)
        rank_zero_info("zero-shot (before training) validation: "
                       + ", ".join(f"{name} {value:.4f}" for name, value in self.metrics.items()
                                   if name in ("top1", "top5", "mAP", "maxF1")))

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        name = self.monitor.removeprefix("val/")
        start, end = self.metrics.get(name), trainer.callback_metrics.get(self.monitor)
        if start is None or end is None or math.isnan(float(end)):
            return
        if float(end) < start:
            rank_zero_warn(f"the fine-tuned model ends below its zero-shot start: {self.monitor} {float(end):.4f} "
                           f"after training vs {start:.4f} before (val/zero_shot/{name}). The recipe destroyed what "
                           "pretraining learned: lower the learning rate (--optimizer.init_args.lr, "
                           "--model.backbone_lr_scale), add warmup, or train longer; or use the pretrained model "
                           "as it is")


class FreezeBackbone(Callback):
    """Trains only the new parts (neck, loss weights) during the first ``epochs`` epochs: the backbone's parameters
    get no gradient (the optimizer leaves them untouched) and its normalisation layers keep their statistics."""

    def __init__(self, epochs: int = 0) -> None:
        """
        Args:
            epochs: epochs at the start of the fit with the backbone frozen (0: none).
        """
        if epochs < 0:
            raise ValueError(f"epochs must be >= 0, got {epochs}")
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        frozen = trainer.current_epoch < self.epochs
        backbone: nn.Module = pl_module.backbone
        backbone.requires_grad_(not frozen)
        # Lightning restores the modules' modes after each validation: the normalisation layers set to eval here
        # would stay in eval after the frozen epochs unless set back explicitly
        for module in backbone.modules():
            if isinstance(module, BATCH_NORMS):
                module.train(not frozen)


class ClassMeanHead(Callback):
    """Starts the loss head (ArcFace class centres, softmax rows) at the mean embedding of each training identity
    (the pretrained model's, training images with the evaluation transform), instead of at random: the first
    gradients then refine the pretrained embedding instead of pulling it towards random centres."""

    def __init__(self, enabled: bool = False) -> None:
        """
        Args:
            enabled: set the class centres from the class means at the start of ``fit`` (not when resuming).
        """
        self.enabled = enabled

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        head = getattr(pl_module, "loss_fn", None)
        if not self.enabled or trainer.global_step > 0 or not hasattr(head, "set_class_centres"):
            return
        datamodule = trainer.datamodule
        embeddings, codes = pl_module.embed(datamodule.eval_loader(datamodule.dataset("train")),
                                            description="class centres: embedding training images",
                                            progress=shows_progress(trainer))
        classes = torch.as_tensor(np.searchsorted(datamodule.class_codes, codes.cpu().numpy()))
        normalised = torch.nn.functional.normalize(embeddings.float().cpu(), dim=1)
        sums = torch.zeros(len(datamodule.class_codes), normalised.shape[1]).index_add_(0, classes, normalised)
        head.set_class_centres(sums)
        rank_zero_info(f"loss head: {len(sums)} class centres set to the mean embedding of their training images")
