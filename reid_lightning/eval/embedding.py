"""The one embedding loop: a model over a data loader, in eval mode, under an optional precision context."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..interrupt import check, interruptible


@contextlib.contextmanager
def borrowed(model: nn.Module, device: torch.device | str | None) -> Iterator[nn.Module]:
    """``model`` in eval mode on ``device`` for the block; module modes and the device are restored after."""
    modes = [(module, module.training) for module in model.modules()]
    tensors = [*model.parameters(), *model.buffers()]
    devices = {tensor.device for tensor in tensors}
    if device is not None and len(devices) > 1:
        raise ValueError(
            f"The model spans devices {sorted(map(str, devices))}; pass device=None to run it where it is."
        )
    home = next(iter(devices)) if devices else None
    try:
        if device is not None:
            model.to(device)
        yield model.eval()
    finally:
        if device is not None and home is not None:
            model.to(home)
        for module, training in modes:
            module.training = training


def _split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(images, labels or None)`` of a batch: a dict with ``image``/``label``, a tuple, or bare images."""
    if isinstance(batch, dict):
        return batch["image"], batch.get("label")
    if isinstance(batch, (tuple, list)):
        return batch[0], (torch.as_tensor(batch[1]) if len(batch) > 1 else None)
    return batch, None


def embed_loader(
    model: nn.Module,
    loader: Iterable,
    *,
    device: torch.device | str | None = None,
    forward: Callable[[nn.Module, Tensor], Tensor] | None = None,
    context: Callable[[], contextlib.AbstractContextManager] | None = None,
    progress: bool = True,
    description: str = "embedding",
) -> tuple[Tensor, Tensor | None]:
    """Embeddings ``(N, D)`` float32 and labels ``(N,)`` (None if the batches carry none) of a loader, in its order.

    Args:
        model: maps images ``(B, C, H, W)`` to ``(B, D)`` (or use ``forward``); borrowed in eval mode.
        loader: yields dict batches (``image``, ``label``), ``(images, labels, ...)`` tuples or bare images.
        device: where to run (None: where the model is).
        forward: optional ``(model, images) -> (B, D)``.
        context: optional factory of the context each forward runs in (e.g. a Lightning precision plugin's
            ``forward_context``), so embeddings match those of the trainer's own loops.
        progress: show a progress bar.
        description: the phase: the progress bar's label (after the enclosing phases' names, e.g.
            ``predict: embedding gallery``) and the error's.

    SIGTERM/SIGINT stop it between batches (:mod:`reid_lightning.interrupt`).
    """
    embeddings, labels = [], []
    with (interruptible(description) as title, borrowed(model, device) as borrowed_model,
          torch.inference_mode()):
        run_device = device if device is not None else next(borrowed_model.parameters(), torch.empty(0)).device
        for batch in tqdm(loader, desc=title, disable=not progress, leave=False):
            check()
            images, batch_labels = _split_batch(batch)
            with context() if context is not None else contextlib.nullcontext():
                images = images.to(run_device)
                out = borrowed_model(images) if forward is None else forward(borrowed_model, images)
            if len(out) != len(images):
                raise ValueError(f"the model returned {len(out)} embeddings for a batch of {len(images)} images")
            embeddings.append(out.float())
            if batch_labels is not None:
                labels.append(batch_labels.to(out.device))
    if not embeddings:
        raise ValueError(f"the {description} data loader is empty")
    return torch.cat(embeddings), (torch.cat(labels) if labels else None)
