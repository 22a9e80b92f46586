"""``RandomState``: checkpoints carry the Python, NumPy and torch random states, so a resumed fit draws the same
augmentations as an uninterrupted one.

The order of the training images is restored by :class:`~reid_lightning.data.ReIDDataModule` itself (its loader
generator is part of its ``state_dict``); this callback restores the global generators the augmentations use.
"""

from __future__ import annotations

import random
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback


def capture_random_states() -> dict[str, Any]:
    """The global random states as tensors and plain values (loadable with ``torch.load(weights_only=True)``)."""
    numpy_state = np.random.get_state(legacy=False)
    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {**numpy_state, "state": {"key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                                           "pos": int(numpy_state["state"]["pos"])}},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_random_states(states: dict[str, Any]) -> None:
    """Set the global random states captured by :func:`capture_random_states`."""
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    numpy_state = states["numpy"]
    key = numpy_state["state"]["key"].numpy().astype(np.uint32)
    np.random.set_state({**numpy_state, "state": {"key": key, "pos": numpy_state["state"]["pos"]}})
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


class RandomState(Callback):
    """Save the global random states in every checkpoint; restore them when a resumed fit starts its next epoch.

    Restoring waits for ``on_train_epoch_start``: between loading the checkpoint and that point Lightning runs
    set-up work (sanity validation, loader creation) that an uninterrupted run does not do at that place.
    """

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        return capture_random_states()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._pending = state_dict

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._pending is not None:
            restore_random_states(self._pending)
            self._pending = None
