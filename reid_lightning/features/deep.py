"""Global embeddings of a dataset from any ``nn.Module`` (timm, transformers, plain torch)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, default_collate

from ..eval.embedding import embed_loader
from .images import item_image


def _embedding(output: Any) -> torch.Tensor:
    """The ``(B, D)`` embedding in a model output: a tensor, image_embeds, pooler_output or a tuple head."""
    for name in ("image_embeds", "pooler_output"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output:
        output = output[0]
    if not isinstance(output, torch.Tensor):
        raise TypeError(f"The model returned a {type(output).__name__}; DeepFeatures needs a (B, D) tensor.")
    if output.ndim != 2:
        raise ValueError(
            f"The model returned shape {tuple(output.shape)}; DeepFeatures needs (B, D) embeddings. "
            "For timm backbones create the model with num_classes=0 (global pooling, no classifier)."
        )
    return output


def _images_only(batch: list[Any]) -> torch.Tensor:
    images = [item[0] if isinstance(item, (tuple, list)) else item for item in batch]
    shapes = {tuple(image.shape) for image in images if isinstance(image, torch.Tensor)}
    if len(shapes) > 1:
        raise ValueError(
            f"Images of one batch differ in shape {sorted(shapes)}; resize them in the transform."
        )
    return default_collate(images)


class DeepFeatures:
    """Embeds every image of a dataset with ``model``: ``DeepFeatures(model)(dataset)`` is ``(N, D)``.

    The caller's model is borrowed: it is put in eval mode on ``device`` during the call, and its modes and
    device are restored afterwards.

    Args:
        model: the embedding network; its output is a ``(B, D)`` tensor (or carries one, see
            :func:`_embedding`).
        batch_size: images per forward pass.
        num_workers: DataLoader workers reading the dataset.
        device: device of the forward passes; None runs the model where it is.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        model: nn.Module,
        batch_size: int = 128,
        num_workers: int = 0,
        device: str | torch.device | None = "cpu",
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.model = model
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.device = torch.device(device) if device is not None else None
        self.progress = progress

    def __call__(self, dataset: Dataset) -> torch.Tensor:
        """``(N, D)`` float32 embeddings on the CPU, in dataset order."""
        if len(dataset) == 0:
            raise ValueError("DeepFeatures got an empty dataset.")
        item_image(dataset[0], 0)
        loader = DataLoader(
            dataset, batch_size=self.batch_size, num_workers=self.num_workers, collate_fn=_images_only
        )
        embeddings, _ = embed_loader(self.model, loader, device=self.device, forward=_forward,
                                     progress=self.progress, description="DeepFeatures")
        return embeddings.cpu()


def _forward(model: nn.Module, images: torch.Tensor) -> torch.Tensor:
    return _embedding(model(images))
