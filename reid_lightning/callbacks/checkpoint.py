"""``LastCheckpoint``: ``ModelCheckpoint`` whose ``last.ckpt`` really holds the last epoch."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` that refreshes ``last.ckpt`` at every save opportunity.

    Lightning 2.6 rewrites ``last.ckpt`` only when a top-k checkpoint was written at the same step, so after an
    epoch that does not improve the monitored metric ``last.ckpt`` silently keeps older weights. Fine-tuning and
    ``test --ckpt_path checkpoints/last.ckpt`` need the newest weights.
    """

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._refresh_last(trainer)

    def _refresh_last(self, trainer: L.Trainer) -> None:
        # skipped when a checkpoint (and so last.ckpt) was already written at this step
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
