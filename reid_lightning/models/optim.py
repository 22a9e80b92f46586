"""Optimizer and learning-rate schedule of a fine-tuning run, from LightningCLI ``--optimizer``/``--lr_scheduler``.

The CLI links its ``optimizer`` and ``lr_scheduler`` groups (class path + init args, any ``torch.optim`` class) to
``ReIDModule``'s arguments of the same names; the module builds them over its parameter groups here:

- the new parts (projection neck, loss weights such as ArcFace's class centres) at the optimizer's learning rate,
  the pretrained backbone at ``backbone_lr_scale`` times it;
- weight decay off for normalisation weights and biases unless ``weight_decay_norm_bias``;
- schedulers step every optimizer step; a scheduler argument ``total_steps`` (or ``T_max`` of
  ``CosineAnnealingLR``) left out is the run's number of optimizer steps.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Iterable
from typing import Any

from lightning.pytorch.cli import instantiate_class
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

DEFAULT_OPTIMIZER = {"class_path": "torch.optim.SGD", "init_args": {"lr": 1e-3, "momentum": 0.9}}
RUN_LENGTH_ARGUMENTS = ("total_steps", "T_max")


def parameter_groups(*, backbone: nn.Module, head: Iterable[nn.Module], backbone_lr_scale: float,
                     weight_decay_norm_bias: bool) -> list[dict[str, Any]]:
    """Trainable parameters split into backbone / head x decayed / not decayed groups (empty groups dropped).

    Each group carries ``lr_scale`` (applied by :func:`build_optimizer`) and, for norms and biases when
    ``weight_decay_norm_bias`` is False, ``weight_decay=0``."""
    groups = []
    for scale, modules in ((backbone_lr_scale, [backbone]), (1.0, list(head))):
        decayed, plain = [], []
        for module in modules:
            for name, parameter in module.named_parameters():
                if not parameter.requires_grad:
                    continue
                no_decay = parameter.ndim <= 1 or name.endswith(".bias")  # norms, biases, scalars
                (plain if no_decay and not weight_decay_norm_bias else decayed).append(parameter)
        groups.append({"params": decayed, "lr_scale": scale})
        groups.append({"params": plain, "lr_scale": scale, "weight_decay": 0.0})
    return [group for group in groups if group["params"]]


def build_optimizer(config: dict | None, groups: list[dict[str, Any]]) -> Optimizer:
    """The optimizer of ``config`` (``class_path`` + ``init_args``; None: SGD lr 1e-3, momentum 0.9) over
    ``groups``, each group's learning rate scaled by its ``lr_scale``."""
    optimizer = instantiate_class(groups, config or DEFAULT_OPTIMIZER)
    for group in optimizer.param_groups:
        group["lr"] *= group.get("lr_scale", 1.0)
    return optimizer


def build_scheduler(config: dict | None, optimizer: Optimizer, total_steps: int) -> dict | None:
    """Lightning's scheduler config (stepped every optimizer step) of ``config``, or None."""
    if not config:
        return None
    config = {"class_path": config["class_path"], "init_args": dict(config.get("init_args") or {})}
    cls = _resolve(config["class_path"])
    accepted = inspect.signature(cls).parameters
    for name in RUN_LENGTH_ARGUMENTS:
        if name in accepted and config["init_args"].get(name) is None:
            config["init_args"][name] = max(1, total_steps)
    return {"scheduler": instantiate_class(optimizer, config), "interval": "step"}


def _resolve(class_path: str) -> type:
    module, _, name = class_path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


class WarmupCosineLR(LambdaLR):
    """Linear warmup from ``warmup_start`` x lr to lr over ``warmup_steps`` (or the ``warmup_fraction`` of the
    run), then cosine decay to ``min_lr_ratio`` x lr at ``total_steps`` (each group's own lr)."""

    def __init__(self, optimizer: Optimizer, total_steps: int | None = None, warmup_steps: int | None = None,
                 warmup_fraction: float = 0.05, warmup_start: float = 0.01, min_lr_ratio: float = 0.0,
                 last_epoch: int = -1) -> None:
        """
        Args:
            optimizer: the wrapped optimizer.
            total_steps: optimizer steps of the whole run (None: filled in by ``ReIDModule`` from the trainer).
            warmup_steps: steps of the linear warmup (None: ``warmup_fraction`` of ``total_steps``).
            warmup_fraction: warmup length as a fraction of the run when ``warmup_steps`` is None.
            warmup_start: learning-rate factor at the first step.
            min_lr_ratio: learning-rate factor at the end of the cosine decay.
            last_epoch: index of the last step (-1: a new run), as torch's schedulers.
        """
        if total_steps is None or total_steps < 1:
            raise ValueError(f"WarmupCosineLR needs total_steps >= 1, got {total_steps}")
        warmup = warmup_steps if warmup_steps is not None else round(warmup_fraction * total_steps)
        warmup = min(max(0, int(warmup)), total_steps)
        self.total_steps, self.warmup_steps = total_steps, warmup

        def factor(step: int) -> float:
            if step < warmup:
                return warmup_start + (1 - warmup_start) * step / warmup
            progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

        super().__init__(optimizer, factor, last_epoch=last_epoch)
