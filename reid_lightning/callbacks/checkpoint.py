"""``LastCheckpoint``: ``ModelCheckpoint`` that keeps every run's checkpoints and a ``last.ckpt`` of the newest."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint

from ..rundir import run_log_dir

LATEST_NAME = "last.ckpt"


class LastCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` whose runs never overwrite each other and whose ``last.ckpt`` holds the last epoch.

    - Each ``fit`` writes into its own folder ``<dirpath>/<run>`` (``run``: the log dir's name, e.g. ``version_3``;
      ``run_N`` without a logger), so a second fit (another recipe, a resumed run) replaces nothing of the first.
    - ``<dirpath>/last.ckpt`` is a link to the newest run's ``last.ckpt`` (a copy where links are not allowed), so
      ``--ckpt_path checkpoints/last.ckpt`` follows the latest ``fit``.
    - ``last.ckpt`` is refreshed at every save opportunity: Lightning 2.6 rewrites it only when a top-k checkpoint
      is written at the same step, so after an epoch that does not improve the monitored metric it would keep
      older weights.
    """

    def __init__(self, *args, per_run: bool = True, **kwargs) -> None:
        """
        Args:
            per_run: write each fit's checkpoints into ``<dirpath>/<run>`` and link ``<dirpath>/last.ckpt`` to
                the newest (False: Lightning's layout, straight into ``dirpath``).
            *args, **kwargs: those of ``ModelCheckpoint``.
        """
        super().__init__(*args, **kwargs)
        self.per_run = per_run
        self.root = Path(self.dirpath) if self.dirpath is not None else None
        """The folder holding the runs' folders and the ``last.ckpt`` link (None: Lightning's default place)."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit" and self.per_run and self.root is not None:
            self.dirpath = str(self.root / self._run_name(trainer))
        super().setup(trainer, pl_module, stage)

    def _run_name(self, trainer: L.Trainer) -> str:
        """The log folder's name (``version_3``, a W&B run id), or without a logger the next free ``run_N``."""
        if trainer.loggers:
            return run_log_dir(trainer).name  # a collective under DDP: every rank calls it
        taken = {path.name for path in self.root.glob("run_*")} if self.root.is_dir() else set()
        name = next(f"run_{n}" for n in range(len(taken) + 1) if f"run_{n}" not in taken)
        return trainer.strategy.broadcast(name)

    def load_state_dict(self, state_dict: dict) -> None:
        if not (self.per_run and self.root is not None):
            super().load_state_dict(state_dict)
            return
        # a resumed fit is a new run in a folder of its own: as Lightning does for a changed folder, only the best
        # path of the run resumed is kept (without Lightning's warning about the change, which is the design here)
        self.best_model_path = state_dict.get("best_model_path", "")

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
        if trainer.is_global_zero and self.per_run and self.root is not None and self.last_model_path:
            point_latest(self.root / LATEST_NAME, Path(self.last_model_path))


def point_latest(link: Path, target: Path) -> None:
    """Make ``link`` a relative symbolic link to ``target``, atomically (a copy where links are not allowed).
    A regular file at ``link`` (an earlier layout's checkpoint) is left alone, with a warning."""
    if link.exists() and not link.is_symlink():
        warnings.warn(f"{link} is a checkpoint file of an earlier run, not a link: it is kept, and the newest run's "
                      f"last checkpoint is {target} (move {link} away to let it point to the newest run)",
                      stacklevel=2)
        return
    handle, temp = tempfile.mkstemp(dir=link.parent, prefix=f".{link.name}.")
    os.close(handle)
    os.unlink(temp)
    try:
        os.symlink(os.path.relpath(target, link.parent), temp)
    except OSError:  # e.g. Windows without the privilege to create links
        shutil.copyfile(target, temp)
    os.replace(temp, link)
