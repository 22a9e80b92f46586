"""Image transforms for training and evaluation, sized and normalised as the backbone expects."""

from __future__ import annotations

from collections.abc import Sequence

import torchvision.transforms as T


def _size_hw(image_size: int | Sequence[int]) -> tuple[int, int]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(int(s) for s in image_size)
    if len(size) != 2 or min(size) <= 0:
        raise ValueError(f"image_size must be a positive int or (height, width), got {image_size!r}")
    return size  # type: ignore[return-value]


def _check_channels(name: str, values: Sequence[float]) -> tuple[float, float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise ValueError(f"{name} must have 3 values (R, G, B), got {values}")
    return values  # type: ignore[return-value]


def build_transforms(
    *,
    image_size: int | Sequence[int],
    mean: Sequence[float],
    std: Sequence[float],
    train: bool,
    randaugment: bool = True,
    randaugment_num_ops: int = 2,
    randaugment_magnitude: int = 9,
    crop_scale: tuple[float, float] | None = (0.8, 1.0),
    hflip: bool = False,
) -> T.Compose:
    """PIL image → normalised tensor (3, H, W).

    Evaluation: resize to ``image_size``. Training: random resized crop covering ``crop_scale`` of the image
    (``None``: plain resize), optional horizontal flip (off by default: the two flanks of an animal carry
    different patterns), RandAugment as in MegaDescriptor's training.

    Args:
        image_size: output size, an int (square) or (height, width).
        mean: per-channel mean for normalisation.
        std: per-channel standard deviation for normalisation.
        train: build the augmenting training transform instead of the evaluation one.
        randaugment: apply RandAugment when training.
        randaugment_num_ops: number of RandAugment operations per image.
        randaugment_magnitude: RandAugment magnitude (0-30).
        crop_scale: area range of the random resized crop; ``None`` resizes the whole image.
        hflip: randomly flip images horizontally when training.
    """
    size = _size_hw(image_size)
    mean, std = _check_channels("mean", mean), _check_channels("std", std)
    if min(std) <= 0:
        raise ValueError(f"std must be positive, got {std}")
    normalize = [T.ToTensor(), T.Normalize(mean=mean, std=std)]
    if not train:
        return T.Compose([T.Resize(size), *normalize])
    if crop_scale is None:
        steps: list = [T.Resize(size)]
    else:
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1:
            raise ValueError(f"crop_scale must satisfy 0 < min <= max <= 1, got {crop_scale}")
        steps = [T.RandomResizedCrop(size, scale=tuple(crop_scale))]
    if hflip:
        steps.append(T.RandomHorizontalFlip())
    if randaugment:
        steps.append(T.RandAugment(num_ops=randaugment_num_ops, magnitude=randaugment_magnitude))
    return T.Compose([*steps, *normalize])
