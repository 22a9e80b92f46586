"""LightningDataModule: metadata → split → datasets → train / query / gallery loaders."""

from __future__ import annotations

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset

from ..rundir import run_log_dir, write_new_file
from .dataset import IMG_LOAD_MODES, ImageDataset
from .labels import UNKNOWN_MARKERS
from .predict_inputs import PredictImages, load_gallery_csv, load_predict_images
from .samplers import MPerClassSampler
from .samples import ReIDSamples
from .sources import MetadataSource, SyntheticSettings, synthetic_source, user_source, uses_synthetic
from .split_data import SplitData, prepare_splits, summary
from .splits import SPLIT_NAMES, check_split_arguments
from .transforms import build_transforms
from .validation import BAD_IMAGE_POLICIES

PROTOCOLS = ("database", "leave_one_out")
DEFAULT_IMAGE_SIZE = 224


class ReIDDataModule(L.LightningDataModule):
    """Re-identification data: validated metadata split into training, validation and test images.

    Training batches: ``{"image": (B, 3, H, W), "label": (B,) class index 0..num_classes-1}``.
    Evaluation batches: ``{"image", "label": (B,) identity code (unknown animals: unique negative codes),
    "index": (B,) position in that loader's dataset, "group": (B,) sequence code}``. Protocol ``database``:
    validation/test loaders are ``[query, gallery]`` with all training images as the gallery; ``leave_one_out``:
    ``[query]``, each image a query against all the others.

    Input size and normalisation (:attr:`data_config`): ``image_size``/``mean``/``std`` when given, else the
    attached model's ``input_config`` (the data module asks the trainer's ``lightning_module`` each time it builds
    transforms: the checkpoint's recorded training preprocessing, else the backbone's), else ImageNet's at 224 px.
    The user's data folder is only read: the synthetic demo set is written to ``synthetic_dir``.

    Args:
        root: folder the image paths are relative to (default: the CSV's folder).
        metadata: CSV path (relative to root or absolute); a DataFrame is accepted from Python. With neither
            root nor metadata, the synthetic demo set is used.
        split: split strategy: closed, open, disjoint, time or column.
        test_ratio: fraction of images held out for testing.
        val_ratio: fraction of images held out for validation.
        open_ratio: fraction of identities seen only in the held-out split (split=open).
        val_unseen_ratio: fraction of identities kept out of training: all their images go to validation, where
            they are new individuals for choosing the open-set threshold and the discovery cut (0: none; then
            identities the model trained on are held out of the gallery instead).
        seed: seed of the split.
        protocol: evaluation protocol: database (query vs. training gallery) or leave_one_out.
        image_size: input size overriding the model's.
        mean: normalisation mean overriding the model's.
        std: normalisation standard deviation overriding the model's.
        img_load: auto (crop to the bbox column when the metadata has one, else full images), full, or bbox.
        on_bad_image: what to do with rows whose image is missing, empty, undecodable or whose bbox misses
            the image (all are checked at set-up): error (list them all and stop) or skip (leave them out,
            listed in skipped_images.csv in the log dir).
        unknown_markers: identity names meaning "individual not known" (case and spaces ignored).
        randaugment: use RandAugment in training.
        randaugment_num_ops: RandAugment operations per image.
        randaugment_magnitude: RandAugment magnitude (0-30).
        crop_scale: area range of the training random resized crop; None resizes the whole image.
        hflip: random horizontal flips in training (off: the two flanks of an animal differ).
        batch_size: training batch size.
        eval_batch_size: evaluation batch size (default: batch_size).
        num_workers: dataloader worker processes.
        m_per_class: sample this many images per identity in each training batch (None: plain shuffling).
        synthetic: use the synthetic demo set (None: when neither root nor metadata is given; true together with
            root or metadata is an error).
        synthetic_dir: where the synthetic set is generated and kept (default .cache/reid_lightning/synthetic).
        synthetic_individuals: individuals in the synthetic set.
        synthetic_images_per_individual: images per individual in the synthetic set.
        synthetic_image_size: side of the synthetic images in pixels.
        exclude_same_sequence: when the metadata has a ``sequence`` (or ``encounter``) column, gallery images of
            a query's own sequence are left out of its ranking and metrics (near-duplicate burst frames would
            inflate every metric); the number of excluded pairs is logged.
        predict_dir: folder of new photos to identify with ``predict`` (searched recursively for
            jpg/png/tiff/webp files).
        predict_csv: CSV of new photos to identify: a ``path`` column (relative to the CSV's folder), optional
            ``image_id`` and ``bbox``. Without predict_dir and predict_csv, ``predict`` identifies the test images
            against the training images.
        gallery_csv: metadata CSV of the known individuals ``predict`` searches (default: every labelled image of
            the data set, train + val + test).
    """

    def __init__(
        self,
        root: str | None = None,
        metadata: str | None = None,
        split: str = "closed",
        test_ratio: float = 0.3,
        val_ratio: float = 0.1,
        open_ratio: float = 0.2,
        val_unseen_ratio: float = 0.0,
        seed: int = 0,
        protocol: str = "database",
        image_size: int | None = None,
        mean: tuple[float, float, float] | None = None,
        std: tuple[float, float, float] | None = None,
        img_load: str = "auto",
        on_bad_image: str = "error",
        unknown_markers: tuple[str, ...] = UNKNOWN_MARKERS,
        randaugment: bool = True,
        randaugment_num_ops: int = 2,
        randaugment_magnitude: int = 9,
        crop_scale: tuple[float, float] | None = (0.8, 1.0),
        hflip: bool = False,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        m_per_class: int | None = None,
        synthetic: bool | None = None,
        synthetic_dir: str | None = None,
        synthetic_individuals: int = 40,
        synthetic_images_per_individual: int = 12,
        synthetic_image_size: int = 96,
        exclude_same_sequence: bool = True,
        predict_dir: str | None = None,
        predict_csv: str | None = None,
        gallery_csv: str | None = None,
    ) -> None:
        super().__init__()
        check_split_arguments(split, test_ratio, val_ratio, open_ratio, val_unseen_ratio)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r} is not supported; choose one of {list(PROTOCOLS)}")
        if img_load not in IMG_LOAD_MODES:
            raise ValueError(f"img_load={img_load!r} is not supported; choose one of {list(IMG_LOAD_MODES)}")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image={on_bad_image!r}: choose one of {list(BAD_IMAGE_POLICIES)}")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"batch sizes must be positive, got {batch_size} and {eval_batch_size}")
        if m_per_class is not None and (m_per_class < 1 or batch_size % m_per_class):
            raise ValueError(f"batch_size={batch_size} must be a positive multiple of m_per_class={m_per_class}")
        if predict_dir is not None and predict_csv is not None:
            raise ValueError("give --data.predict_dir or --data.predict_csv, not both")
        self.save_hyperparameters(ignore=["metadata"] if isinstance(metadata, pd.DataFrame) else None)
        self.root, self.metadata = root, metadata
        self.synthetic = uses_synthetic(synthetic=synthetic, root=root, metadata=metadata)
        self.synthetic_dir = synthetic_dir
        self.synthetic_settings = SyntheticSettings(synthetic_individuals, synthetic_images_per_individual,
                                                    synthetic_image_size)
        self.split_settings = {"split": split, "test_ratio": test_ratio, "val_ratio": val_ratio,
                               "open_ratio": open_ratio, "val_unseen_ratio": val_unseen_ratio, "seed": seed}
        self.seed = seed
        self.protocol = protocol
        self.image_size, self.mean, self.std = image_size, mean, std
        self.img_load = img_load
        self.on_bad_image = on_bad_image
        self.unknown_markers = tuple(unknown_markers)
        self.augmentation = {"randaugment": randaugment, "randaugment_num_ops": randaugment_num_ops,
                             "randaugment_magnitude": randaugment_magnitude, "crop_scale": crop_scale,
                             "hflip": hflip}
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.m_per_class = m_per_class
        self.exclude_same_sequence = exclude_same_sequence
        self.predict_dir, self.predict_csv, self.gallery_csv = predict_dir, predict_csv, gallery_csv
        self.split_data: SplitData | None = None
        """The usable images and their split, after :meth:`setup`."""
        self.predict_images: PredictImages | None = None
        """The new photos of ``predict_dir``/``predict_csv`` and the unreadable ones, once loaded."""
        self._warned_sizes: set[tuple] = set()
        self._train_generator: torch.Generator | None = None
        self._pending_generator_state: torch.Tensor | None = None
        self._sampler_seed: int | None = None
        self._pending_sampler_seed: int | None = None

    # ----------------------------------------------------------------------------------------- set-up
    @property
    def data_config(self) -> dict:
        """Input ``size``, ``mean``, ``std``: explicit arguments, else the attached model's ``input_config``, else
        ImageNet's at 224 px. An explicit size or normalisation other than the one the model was trained with
        (recorded in its checkpoint) is used, with a warning naming both."""
        model = self.trainer.lightning_module if self.trainer is not None else None
        model_config = getattr(model, "input_config", None) or {}
        if not model_config and self.image_size is None:
            rank_zero_warn(f"ReIDDataModule: no model attached and no image_size; using {DEFAULT_IMAGE_SIZE} px")
        config = {"size": self.image_size or model_config.get("size", DEFAULT_IMAGE_SIZE),
                  "mean": tuple(self.mean or model_config.get("mean", IMAGENET_DEFAULT_MEAN)),
                  "std": tuple(self.std or model_config.get("std", IMAGENET_DEFAULT_STD))}
        self._warn_if_untrained_preprocessing(config, getattr(model, "trained_input_config", None))
        return config

    def _warn_if_untrained_preprocessing(self, config: dict, trained: dict | None) -> None:
        if not trained:
            return
        differences = [f"{name} {_size(trained[name])} at training, {_size(config[name])} now (--data.{arg})"
                       for name, arg in (("size", "image_size"), ("mean", "mean"), ("std", "std"))
                       if _size(trained[name]) != _size(config[name])]
        key = tuple(differences)
        if differences and key not in self._warned_sizes:
            self._warned_sizes.add(key)
            rank_zero_warn("the model was trained with other preprocessing than this run uses: "
                           + "; ".join(differences) + ". Its embeddings change, and the open-set threshold and "
                           "confidence calibration chosen at training no longer fit them; leave the setting out "
                           "to use the checkpoint's")

    def source(self) -> MetadataSource:
        """The metadata and image folder of this data set (the synthetic set is generated when missing)."""
        if self.synthetic:
            return synthetic_source(self.synthetic_dir, self.synthetic_settings, self.seed)
        return user_source(self.root, self.metadata)

    def prepare_data(self) -> None:
        """Write the synthetic demo set when it is used (reused when already complete)."""
        if self.synthetic:
            self.source()

    def setup(self, stage: str | None = None) -> None:
        """Load and validate the metadata and every image, split it and index the images (once)."""
        if self.split_data is not None:
            return
        self.split_data = prepare_splits(
            self.source(), **self.split_settings, img_load=self.img_load, on_bad_image=self.on_bad_image,
            unknown_markers=self.unknown_markers, exclude_same_sequence=self.exclude_same_sequence,
            progress=self._is_reporter())
        if self.protocol == "database":
            for stage_name in ("val", "test"):
                codes = self.split_data.codes(stage_name)
                if len(codes) and not np.isin(codes, self.split_data.class_codes).any():
                    rank_zero_warn(
                        f"ReIDDataModule: no {stage_name} query has its identity among the training images "
                        f"(split='{self.split_settings['split']}'), so database retrieval cannot find any match; "
                        "use protocol='leave_one_out' for identity-disjoint splits")
        self._report()

    def _is_reporter(self) -> bool:
        return self.trainer is not None and self.trainer.is_global_zero

    def _report(self) -> None:
        """Print the data summary in a trainer's run and write it (and the skipped rows) to its log dir."""
        if self.trainer is None:
            return
        log_dir = run_log_dir(self.trainer)  # a collective under DDP (log_dir is broadcast): every rank calls it
        if not self._is_reporter():
            return
        text = self.summary()
        written = write_new_file(log_dir / "data_summary.txt", (text + "\n").encode())
        print(f"{text}\ndata summary written to {written}")
        skipped = self._split_data().skipped
        if len(skipped):
            listed = write_new_file(log_dir / "skipped_images.csv", skipped.to_csv(index=False).encode())
            print(f"{len(skipped)} rows with unusable images skipped; listed in {listed}")

    def _split_data(self) -> SplitData:
        if self.split_data is None:
            raise RuntimeError("ReIDDataModule is not set up yet; call setup() first")
        return self.split_data

    def summary(self) -> str:
        """Images, identities, single-image identities and unknown animals per split; queries whose identity
        is not in the gallery; rows skipped as bad images."""
        return summary(self._split_data(), protocol=self.protocol, unknown_markers=self.unknown_markers,
                       on_bad_image=self.on_bad_image)

    # ----------------------------------------------------------------------------------------- facts
    @property
    def num_classes(self) -> int:
        """Number of training identities (classes of a classification loss)."""
        return len(self._split_data().class_codes)

    @property
    def identity_names(self) -> dict[int, str]:
        """Identity code → name (unknown animals: negative codes → ``"unknown"``)."""
        return dict(self._split_data().images.labels_map)

    @property
    def class_names(self) -> list[str]:
        """Training class index → identity name."""
        names = self._split_data().images.labels_map
        return [names[int(code)] for code in self._split_data().class_codes]

    @property
    def class_codes(self) -> np.ndarray:
        """(num_classes,) identity code of every training class index."""
        return self._split_data().class_codes.copy()

    def dataset(self, split: str, *, train_transform: bool = False) -> ImageDataset:
        """Images of ``split`` (train/val/test) with the evaluation (or training) transform, global codes."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {list(SPLIT_NAMES)}, got {split!r}")
        data = self._split_data()
        return self.with_transform(data.images.get_subset(data.positions[split]), train=train_transform)

    def with_transform(self, dataset: ImageDataset, *, train: bool = False) -> ImageDataset:
        """A copy of ``dataset`` with this data module's evaluation (or training) transform."""
        config = self.data_config
        subset = dataset.get_subset(np.arange(len(dataset)))
        subset.transform = build_transforms(image_size=config["size"], mean=config["mean"], std=config["std"],
                                            train=train, **self.augmentation)
        return subset

    def eval_datasets(self, stage: str) -> list[ImageDataset]:
        """Datasets of the ``val``/``test`` loaders, in loader order: ``[query, gallery]`` or ``[query]``."""
        if stage not in ("val", "test"):
            raise ValueError(f"stage must be 'val' or 'test', got {stage!r}")
        queries = self.dataset(stage)
        return [queries, self.dataset("train")] if self.protocol == "database" else [queries]

    def eval_groups(self, stage: str) -> list[np.ndarray]:
        """Sequence codes (-1: none) of the images of :meth:`eval_datasets`, in the same order."""
        data = self._split_data()
        stages = [stage, "train"] if self.protocol == "database" else [stage]
        return [data.groups[data.positions[name]] for name in stages]

    # ----------------------------------------------------------------------------------------- loaders
    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          pin_memory=torch.cuda.is_available(), **kwargs)

    def eval_loader(self, dataset: ImageDataset, groups: np.ndarray | None = None) -> DataLoader:
        """Evaluation batches ``{"image", "label", "index"[, "group"]}`` of ``dataset`` in order."""
        samples = ReIDSamples(dataset, dataset.labels, with_index=True, groups=groups)
        return self._loader(samples, batch_size=self.eval_batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        """Augmented training images; an incomplete last batch is dropped (one image breaks BatchNorm).

        The shuffling (and the loader workers' seeds) come from the loader's own generator, whose state is
        part of :meth:`state_dict`, so a resumed fit draws the same batches as an uninterrupted one.
        """
        samples = ReIDSamples(self.dataset("train", train_transform=True), self._split_data().class_index)
        self._train_generator = torch.Generator()
        if self._pending_generator_state is not None:
            self._train_generator.set_state(self._pending_generator_state)
            self._pending_generator_state = None
        else:  # seeded from the global generator, so that seed_everything decides the order
            self._train_generator.manual_seed(int(torch.randint(2**62, ()).item()))
        if self.m_per_class is None:
            return self._loader(samples, batch_size=self.batch_size, shuffle=True,
                                drop_last=len(samples) > self.batch_size, generator=self._train_generator)
        if self._pending_sampler_seed is not None:
            self._sampler_seed, self._pending_sampler_seed = self._pending_sampler_seed, None
        else:
            self._sampler_seed = int(torch.randint(2**62, (), generator=self._train_generator))
        trainer = self.trainer
        sampler = MPerClassSampler(
            self._split_data().class_index, m=self.m_per_class, batch_size=self.batch_size, seed=self._sampler_seed,
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=trainer.global_rank if trainer is not None else 0)
        return self._loader(samples, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                            generator=self._train_generator)

    def state_dict(self) -> dict:
        """The training loader's generator state and m-per-class seed (saved in checkpoints for an exact resume)."""
        state = {} if self._train_generator is None else {"train_generator": self._train_generator.get_state()}
        if self._sampler_seed is not None:
            state["m_per_class_seed"] = self._sampler_seed
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the training loader's generator; applied when the training loader is next created."""
        self._pending_generator_state = state_dict.get("train_generator")
        self._pending_sampler_seed = state_dict.get("m_per_class_seed")

    def gallery_dataloader(self) -> DataLoader:
        """All training images with the evaluation transform (the database of known individuals)."""
        return self.eval_loader(self.dataset("train"))

    def _stage_loaders(self, stage: str) -> list[DataLoader]:
        if len(self._split_data().positions[stage]) == 0:
            return []
        return [self.eval_loader(dataset, groups)
                for dataset, groups in zip(self.eval_datasets(stage), self.eval_groups(stage), strict=True)]

    def val_dataloader(self) -> list[DataLoader]:
        """``[query, gallery]`` (database) or ``[query]`` (leave_one_out) loaders; ``[]`` if no val images."""
        return self._stage_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        """``[query, gallery]`` (database) or ``[query]`` (leave_one_out) loaders over the test images."""
        return self._stage_loaders("test")

    # ----------------------------------------------------------------------------------------- predict
    def predict_dataloader(self) -> DataLoader:
        """The new photos (``predict_dir`` / ``predict_csv``; default: the test images) with the evaluation
        transform; batches ``{"image", "label": -1, "index"}``. Unreadable files are left out and listed in
        :attr:`predict_images`."""
        dataset = self.predict_dataset()
        return self._loader(ReIDSamples(dataset, np.full(len(dataset), -1), with_index=True),
                            batch_size=self.eval_batch_size, shuffle=False)

    def predict_dataset(self) -> ImageDataset:
        """Images ``predict`` identifies, with the evaluation transform (see :meth:`predict_dataloader`)."""
        if self.predict_dir is None and self.predict_csv is None:
            return self.dataset("test")
        if self.predict_images is None:
            self.predict_images = load_predict_images(predict_dir=self.predict_dir, predict_csv=self.predict_csv,
                                                      progress=self._is_reporter())
        return self.with_transform(self.predict_images.dataset)

    def predict_gallery(self) -> ImageDataset:
        """The known individuals ``predict`` searches: ``gallery_csv``, else every labelled image of the data set
        (the training images when predicting the test split), with the evaluation transform."""
        if self.predict_dir is None and self.predict_csv is None and self.gallery_csv is None:
            return self.dataset("train")
        return self.known_individuals()

    def known_individuals(self) -> ImageDataset:
        """Every photo of a known individual new photos are searched in: ``gallery_csv``, else every labelled
        image of the data set (train + val + test), with the evaluation transform (an exported bundle's
        gallery)."""
        if self.gallery_csv is not None:
            return self.with_transform(load_gallery_csv(self.gallery_csv, unknown_markers=self.unknown_markers,
                                                        progress=self._is_reporter()))
        images = self._split_data().images
        return self.with_transform(images.get_subset(images.labels >= 0))


def _size(value) -> tuple:
    """A size or channel triple as a comparable tuple (an int size is square)."""
    if isinstance(value, int):
        return (value, value)
    return tuple(int(v) if float(v).is_integer() else round(float(v), 6) for v in value)
