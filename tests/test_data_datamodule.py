"""ReIDDataModule: split wiring, label coding and batch structure of every loader."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import pytest
import torch

from reid_lightning.data import MPerClassSampler, ReIDDataModule, make_synthetic_individuals
from reid_lightning.models import ReIDModule

SYNTHETIC = {"synthetic_individuals": 6, "synthetic_images_per_individual": 5, "synthetic_image_size": 32}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synthetic")
    make_synthetic_individuals(root, num_individuals=6, images_per_individual=5, image_size=32)
    return root


def make_module(synthetic_dir: Path, **kwargs) -> ReIDDataModule:
    defaults = {"synthetic_dir": str(synthetic_dir), "synthetic": True, "image_size": 24, "batch_size": 4, "val_ratio": 0.2}
    module = ReIDDataModule(**{**defaults, **SYNTHETIC, **kwargs})
    module.prepare_data()
    module.setup("fit")
    return module


def attach(module: ReIDDataModule, input_size: tuple[int, int], mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)):
    """Attach a model whose backbone expects ``input_size`` with ``mean``/``std`` (the data module asks it)."""
    model = ReIDModule(backbone="resnet10t", pretrained=False, backbone_init_args={"pretrained_cfg_overlay": {
        "input_size": (3, *input_size), "mean": mean, "std": std}})
    trainer = L.Trainer(logger=False, accelerator="cpu", enable_progress_bar=False)
    trainer.strategy.connect(model)
    module.trainer = trainer
    return model


def collect(loader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}


def test_train_batches_carry_contiguous_class_index(synthetic_root):
    module = make_module(synthetic_root, image_size=None)
    attach(module, (20, 28))
    loader = module.train_dataloader()
    batch = next(iter(loader))
    assert set(batch) == {"image", "label"}
    assert batch["image"].shape == (4, 3, 20, 28) and batch["image"].dtype == torch.float32
    assert batch["label"].dtype == torch.long
    train = module.dataset("train")
    assert module.num_classes == train.metadata["identity"].nunique() == 6
    assert module.class_names == sorted(train.metadata["identity"].unique())
    samples = loader.dataset  # the label of every row is the class index of its identity
    assert [module.class_names[samples[i]["label"]] for i in range(len(samples))] == list(train.labels_string)
    assert len(loader) == len(samples) // 4  # incomplete last batch dropped


def test_image_size_argument_overrides_backbone_config(synthetic_root):
    module = make_module(synthetic_root, image_size=16)
    attach(module, (20, 28), mean=(0.1, 0.2, 0.3), std=(0.3, 0.2, 0.1))
    assert module.data_config == {"size": 16, "mean": (0.1, 0.2, 0.3), "std": (0.3, 0.2, 0.1)}
    assert next(iter(module.train_dataloader()))["image"].shape[-2:] == (16, 16)


def test_database_protocol_query_and_gallery_loaders(synthetic_root):
    module = make_module(synthetic_root, protocol="database", eval_batch_size=3)
    for stage, loaders in (("val", module.val_dataloader()), ("test", module.test_dataloader())):
        assert len(loaders) == 2
        query, gallery = (collect(loader) for loader in loaders)
        assert set(query) == {"image", "label", "index", "group"}
        assert (query["group"] == -1).all()  # no sequence column
        expected = [module.dataset(stage), module.dataset("train")]
        for batch, dataset in zip((query, gallery), expected, strict=True):
            assert batch["image"].shape == (len(dataset), 3, 24, 24)
            assert batch["index"].tolist() == list(range(len(dataset)))  # in order, no shuffling
            names = [module.identity_names[code] for code in batch["label"].tolist()]
            assert names == list(dataset.labels_string)
        assert set(query["label"].tolist()) <= set(gallery["label"].tolist())  # closed split
    assert len(collect(module.gallery_dataloader())["label"]) == len(module.dataset("train"))
    predict = collect(module.predict_dataloader())
    assert predict["index"].tolist() == list(range(len(module.dataset("test"))))


def test_leave_one_out_protocol_has_only_query_loaders(synthetic_root):
    module = make_module(synthetic_root, protocol="leave_one_out", split="disjoint")
    loaders = module.test_dataloader()
    assert len(loaders) == 1
    test = collect(loaders[0])
    assert len(test["label"]) == len(module.dataset("test"))
    assert not set(test["label"].tolist()) & set(module.class_codes.tolist())  # disjoint identities
    assert [len(d) for d in module.eval_datasets("test")] == [len(module.dataset("test"))]


def test_unknown_animals_never_train_and_never_match(synthetic_root):
    metadata = pd.read_csv(synthetic_root / "metadata.csv")
    metadata.loc[metadata["identity"] == "ind_005", "identity"] = "unknown"
    original = metadata.copy()
    module = make_module(synthetic_root, synthetic=False, root=str(synthetic_root), metadata=metadata,
                         test_ratio=0.3, val_ratio=0.0)
    pd.testing.assert_frame_equal(metadata, original)
    assert module.num_classes == 5 and "unknown" not in module.class_names
    train_labels = collect(module.train_dataloader())["label"].tolist()
    assert "unknown" not in {module.class_names[label] for label in train_labels}
    assert module.val_dataloader() == []
    query = collect(module.test_dataloader()[0])
    unknown_codes = query["label"][query["label"] < 0].tolist()
    assert len(unknown_codes) == 5 and len(set(unknown_codes)) == 5  # unique negatives: never a positive
    assert all(module.identity_names[code] == "unknown" for code in unknown_codes)
    num_test = len(module.dataset("test"))
    assert f"test (database): {num_test} queries, 5 without their identity in the gallery" in module.summary()


def test_summary_counts_and_unmatched_queries(synthetic_root):
    module = make_module(synthetic_root, split="open", open_ratio=0.34, val_ratio=0.0)
    test = module.dataset("test")
    absent = int((~np.isin(test.labels, module.class_codes)).sum())
    assert absent == 10  # round(6 * 0.34) = 2 open identities, 5 images each
    lines = module.summary().splitlines()
    # split, images, identities, single-image identities, unknown
    assert lines[1].split() == ["train", str(len(module.dataset("train"))), "4", "0", "0"]
    assert lines[3].split()[:2] == ["test", str(len(test))]
    assert f"{len(test)} queries, {absent} without their identity" in lines[5]


def test_m_per_class_batches(synthetic_root):
    module = make_module(synthetic_root, m_per_class=2, batch_size=6, test_ratio=0.2, val_ratio=0.0)
    batches = list(module.train_dataloader())
    assert len(batches) >= len(module.dataset("train")) // 6 - 1
    for batch in batches:
        _, counts = torch.unique(batch["label"], return_counts=True)
        assert counts.tolist() == [2, 2, 2]


def test_metadata_csv_without_root_reads_paths_next_to_it(synthetic_root):
    module = ReIDDataModule(metadata=str(synthetic_root / "metadata.csv"), image_size=16)
    module.setup()
    assert module.root is None and module.split_data.images.root == synthetic_root.resolve()  # settings kept
    assert len(module.dataset("train")) + len(module.dataset("val")) + len(module.dataset("test")) == 30


def test_default_synthetic_cache_location(synthetic_root, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = ReIDDataModule(image_size=16, **SYNTHETIC)
    assert module.synthetic
    module.prepare_data()
    assert (tmp_path / ".cache/reid_lightning/synthetic/metadata.csv").is_file()
    module.setup()  # the default, relative root (make demo's) must resolve once, not twice
    assert len(module.dataset("train")) > 0


def test_clear_errors(synthetic_root, tmp_path):
    with pytest.raises(ValueError, match="protocol='gallery'"):
        ReIDDataModule(protocol="gallery")
    with pytest.raises(ValueError, match="unknown split strategy 'random'"):
        ReIDDataModule(split="random")
    with pytest.raises(ValueError, match="multiple of m_per_class=3"):
        ReIDDataModule(batch_size=8, m_per_class=3)
    with pytest.raises(RuntimeError, match="call setup"):
        _ = ReIDDataModule(root=str(synthetic_root)).num_classes
    with pytest.raises(FileNotFoundError, match="metadata.csv' does not exist"):
        ReIDDataModule(root=str(tmp_path)).setup()
    with pytest.raises(ValueError, match=r"--data.synthetic true generates the demo set, but --data.root .* add "
                                         r"--data.synthetic false"):
        ReIDDataModule(root=str(tmp_path), synthetic=True)


def test_lightning_trainer_runs_the_loaders(synthetic_root, tmp_path):
    data = ReIDDataModule(synthetic_dir=str(synthetic_root), batch_size=4, val_ratio=0.2, **SYNTHETIC)
    # the backbone's own input size (32 px, not the module's 224 px default) must reach the loaders
    model = ReIDModule(backbone="resnet10t", pretrained=False, loss="softmax",
                       backbone_init_args={"pretrained_cfg_overlay": {"input_size": (3, 32, 32)}})
    trainer = L.Trainer(max_epochs=1, logger=False, default_root_dir=tmp_path, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        accelerator="cpu")
    trainer.fit(model, datamodule=data)
    assert data.data_config["size"] == (32, 32)
    assert next(iter(data.train_dataloader()))["image"].shape == (4, 3, 32, 32)
    assert model.num_classes == data.num_classes == 6 and model.hparams.num_classes is None  # hparams untouched
    assert model.trained_input_config == {"size": (32, 32), "mean": data.data_config["mean"],
                                          "std": data.data_config["std"]}
    assert trainer.callback_metrics["val/num_queries"] == len(data.dataset("val"))


def test_m_per_class_sampler_argument_errors():
    labels = np.repeat(np.arange(3), 4)
    with pytest.raises(ValueError, match="multiple of m_per_class=4"):
        MPerClassSampler(labels, m=4, batch_size=6)
    with pytest.raises(ValueError, match="m_per_class=2 x 3 training identities < batch_size=8"):
        MPerClassSampler(labels, m=2, batch_size=8)
    with pytest.raises(ValueError, match="no full m_per_class batch per rank"):
        MPerClassSampler(labels, m=2, batch_size=6, num_replicas=3)
    sampler = MPerClassSampler(labels, m=2, batch_size=6)
    assert len(sampler) == 12  # one epoch = one pass over the training images (2 chunks of 2 per identity)
    indices = np.array(list(sampler)).reshape(-1, 6)
    for batch in indices:
        assert sorted(np.bincount(labels[batch], minlength=3).tolist()) == [2, 2, 2]


def test_eval_batches_carry_sequence_codes(tmp_path):
    from PIL import Image

    from reid_lightning.data import ReIDDataModule

    rows = []
    for i in range(24):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (i * 10, 0, 0)).save(path)
        rows.append({"image_id": f"im{i}", "identity": f"id{i % 4}", "path": path.name,
                     "sequence": "" if i % 5 == 0 else f"burst{i // 3}"})
    frame = pd.DataFrame(rows)
    frame.to_csv(tmp_path / "metadata.csv", index=False)
    for exclude in (True, False):
        module = ReIDDataModule(root=str(tmp_path), metadata="metadata.csv", image_size=8, batch_size=4,
                                exclude_same_sequence=exclude)
        module.setup("test")
        sequences, groups = [], []
        for dataset, loader in zip(module.eval_datasets("test"), module.test_dataloader()):
            groups += torch.cat([batch["group"] for batch in loader]).tolist()
            sequences += dataset.metadata["sequence"].fillna("").astype(str).tolist()
        if not exclude:
            assert set(groups) == {-1}
            continue
        assert [g == -1 for g in groups] == [s == "" for s in sequences]
        # equal sequence names <=> equal codes, across the query and the gallery loader
        pairs = set(zip(sequences, groups))
        assert len(pairs) == len({s for s, _ in pairs}) == len({g for _, g in pairs})


def test_preprocessing_other_than_the_training_one_warns_with_both_values(synthetic_root):
    module = make_module(synthetic_root, image_size=48)
    model = attach(module, (20, 28))
    model.trained_input_config = {"size": (32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
    with pytest.warns(UserWarning, match=r"size \(32, 32\) at training, \(48, 48\) now \(--data.image_size\).*"
                                         r"open-set threshold"):
        assert module.data_config["size"] == 48
    # without an explicit size the checkpoint's training size is used, silently
    quiet = make_module(synthetic_root, image_size=None)
    attach(quiet, (20, 28)).trained_input_config = model.trained_input_config
    assert quiet.data_config["size"] == (32, 32)
