"""DeepFeatures: embeddings of a dataset, without side effects on the caller's model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from reid_lightning.features import DeepFeatures


class Items(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, with_labels: bool) -> None:
        self.images, self.with_labels = images, with_labels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int):
        return (self.images[index], index % 2) if self.with_labels else self.images[index]


def make_model() -> nn.Module:
    torch.manual_seed(0)
    # dropout and batch norm behave differently in training mode, so a forgotten eval() changes the output
    return nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.AdaptiveAvgPool2d(1), nn.Flatten()
    )


@pytest.mark.parametrize("with_labels", [True, False])
def test_embeddings_equal_eval_forward_in_dataset_order(with_labels):
    images = torch.rand(5, 3, 16, 16)
    model = make_model()
    features = DeepFeatures(model, batch_size=2, progress=False)(Items(images, with_labels))
    model.eval()
    with torch.no_grad():
        expected = model(images)
    assert features.dtype == torch.float32 and features.shape == (5, 4)
    assert torch.allclose(features, expected, atol=1e-6)


def test_caller_model_modes_are_restored():
    model = make_model()
    model[1].eval()  # a frozen batch norm inside a model in training mode
    running_mean = model[1].running_mean.clone()
    DeepFeatures(model, batch_size=2, progress=False)(Items(torch.rand(3, 3, 16, 16), True))
    assert model.training and model[0].training and not model[1].training and model[2].training
    assert torch.equal(model[1].running_mean, running_mean)


def test_non_embedding_output_is_a_clear_error():
    model = nn.Conv2d(3, 2, 3)
    with pytest.raises(ValueError, match="num_classes=0"):
        DeepFeatures(model, progress=False)(Items(torch.rand(2, 3, 8, 8), True))


def test_transformers_style_output_uses_pooler_output():
    class Output:
        def __init__(self, pooled: torch.Tensor) -> None:
            self.pooler_output = pooled
            self.last_hidden_state = pooled[:, None]

    class Wrapped(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = make_model()

        def forward(self, images):
            return Output(self.inner(images))

    model = Wrapped()
    images = torch.rand(3, 3, 16, 16)
    features = DeepFeatures(model, progress=False)(Items(images, True))
    assert torch.allclose(features, model.eval().inner(images), atol=1e-6)


def test_images_of_different_sizes_are_a_clear_error():
    images = [torch.rand(3, 16, 16), torch.rand(3, 16, 20)]
    with pytest.raises(ValueError, match="differ in shape"):
        DeepFeatures(make_model(), batch_size=2, progress=False)(images)
