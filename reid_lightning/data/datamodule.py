"""LightningDataModule: metadata → split → datasets → train / query / gallery loaders."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch
from lightning.pytorch.utilities import rank_zero_warn
from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from torch.utils.data import DataLoader, Dataset

from ..rundir import run_log_dir, write_new_file
from .dataset import IMG_LOAD_MODES, ImageDataset
from .labels import UNKNOWN_MARKERS, contiguous_classes
from .metadata import find_metadata_csv, load_metadata
from .samplers import MPerClassSampler
from .splits import SPLIT_NAMES, check_split_arguments, split_metadata
from .transforms import build_transforms
from .validation import BAD_IMAGE_POLICIES, bad_images_message, check_images

DEFAULT_SYNTHETIC_ROOT = Path(".cache/reid_lightning/synthetic")
PROTOCOLS = ("database", "leave_one_out")
DEFAULT_IMAGE_SIZE = 224
SEQUENCE_COLUMNS = ("sequence", "encounter")
"""Metadata columns naming a camera-trap burst / encounter; its near-duplicate frames never match each other."""


class ReIDSamples(Dataset):
    """Dict samples ``{"image": (3, H, W), "label": int[, "index": int, "group": int]}`` over an
    :class:`ImageDataset`.

    Args:
        dataset: images with a tensor-producing transform.
        labels: (N,) label of every image (class index for training, identity code for evaluation).
        with_index: add the sample's position within ``dataset`` as ``"index"``.
        groups: optional (N,) sequence code of every image (-1: none), added as ``"group"``.
    """

    def __init__(self, dataset: ImageDataset, labels: np.ndarray, with_index: bool = False,
                 groups: np.ndarray | None = None) -> None:
        if len(labels) != len(dataset) or (groups is not None and len(groups) != len(dataset)):
            raise ValueError(f"{len(labels)} labels for a dataset of {len(dataset)} images")
        self.dataset = dataset
        self.labels = np.asarray(labels, dtype=np.int64)
        self.with_index = with_index
        self.groups = None if groups is None else np.asarray(groups, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, idx: int) -> dict:
        item = self.dataset[idx]
        sample = {"image": item[0] if self.dataset.load_label else item, "label": int(self.labels[idx])}
        if self.with_index:
            sample["index"] = idx
        if self.groups is not None:
            sample["group"] = int(self.groups[idx])
        return sample


class ReIDDataModule(L.LightningDataModule):
    """Re-identification data: validated metadata split into training, validation and test images.

    Training batches: ``{"image": (B, 3, H, W), "label": (B,) class index 0..num_classes-1}``.
    Evaluation batches: ``{"image", "label": (B,) identity code (unknown animals: unique negative codes),
    "index": (B,) position in that loader's dataset}``. Protocol ``database``: validation/test loaders are
    ``[query, gallery]`` with all training images as the gallery; ``leave_one_out``: ``[query]``, each image
    a query against all the others. No backbone is built here: the model calls :meth:`set_data_config`
    (before the dataloaders are requested, e.g. in its ``setup``) with its input size and normalisation.

    Args:
        root: folder the image paths are relative to (default: the CSV's folder, or the synthetic set's).
        metadata: CSV path (relative to root or absolute); a DataFrame is accepted from Python. With neither
            root nor metadata, the synthetic demo set is used.
        split: split strategy: closed, open, disjoint, time or column.
        test_ratio: fraction of images held out for testing.
        val_ratio: fraction of images held out for validation.
        open_ratio: fraction of identities seen only in the held-out split (split=open).
        seed: seed of the split.
        protocol: evaluation protocol: database (query vs. training gallery) or leave_one_out.
        image_size: input size overriding the backbone's.
        mean: normalisation mean overriding the backbone's.
        std: normalisation standard deviation overriding the backbone's.
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
        synthetic: use the synthetic demo set (written to root, or .cache/reid_lightning/synthetic).
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
        gallery_cache: folder where ``predict`` keeps the gallery embeddings, keyed by model weights, transform
            and gallery metadata, so that the gallery is embedded once.
    """

    def __init__(
        self,
        root: str | None = None,
        metadata: str | None = None,
        split: str = "closed",
        test_ratio: float = 0.3,
        val_ratio: float = 0.1,
        open_ratio: float = 0.2,
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
        synthetic: bool = False,
        synthetic_individuals: int = 40,
        synthetic_images_per_individual: int = 12,
        synthetic_image_size: int = 96,
        exclude_same_sequence: bool = True,
        predict_dir: str | None = None,
        predict_csv: str | None = None,
        gallery_csv: str | None = None,
        gallery_cache: str | None = None,
    ) -> None:
        super().__init__()
        check_split_arguments(split, test_ratio, val_ratio, open_ratio)
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r} is not supported; choose one of {list(PROTOCOLS)}")
        if img_load not in IMG_LOAD_MODES:
            raise ValueError(f"img_load={img_load!r} is not supported; choose one of {list(IMG_LOAD_MODES)}")
        if on_bad_image not in BAD_IMAGE_POLICIES:
            raise ValueError(f"on_bad_image={on_bad_image!r}: choose one of {list(BAD_IMAGE_POLICIES)}")
        if batch_size < 1 or (eval_batch_size is not None and eval_batch_size < 1):
            raise ValueError(f"batch sizes must be positive, got {batch_size} and {eval_batch_size}")
        if m_per_class is not None and (m_per_class < 1 or batch_size % m_per_class):
            raise ValueError(
                f"batch_size={batch_size} must be a positive multiple of m_per_class={m_per_class}"
            )
        self.save_hyperparameters(ignore=["metadata"] if isinstance(metadata, pd.DataFrame) else None)
        self.root = root
        self.metadata = metadata
        self.split = split
        self.test_ratio, self.val_ratio, self.open_ratio = test_ratio, val_ratio, open_ratio
        self.seed = seed
        self.protocol = protocol
        self.image_size, self.mean, self.std = image_size, mean, std
        self.img_load = img_load
        self.on_bad_image = on_bad_image
        self.unknown_markers = tuple(unknown_markers)
        self.skipped_images = pd.DataFrame()
        self.augmentation = {
            "randaugment": randaugment,
            "randaugment_num_ops": randaugment_num_ops,
            "randaugment_magnitude": randaugment_magnitude,
            "crop_scale": crop_scale,
            "hflip": hflip,
        }
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.m_per_class = m_per_class
        self.synthetic = synthetic or (root is None and metadata is None)
        self.synthetic_options = {
            "num_individuals": synthetic_individuals,
            "images_per_individual": synthetic_images_per_individual,
            "image_size": synthetic_image_size,
        }
        self.exclude_same_sequence = exclude_same_sequence
        if predict_dir is not None and predict_csv is not None:
            raise ValueError("give --data.predict_dir or --data.predict_csv, not both")
        self.predict_dir, self.predict_csv = predict_dir, predict_csv
        self.gallery_csv, self.gallery_cache = gallery_csv, gallery_cache
        self.unreadable_predict_images = pd.DataFrame()
        self._predict_images: ImageDataset | None = None
        self._groups = np.empty(0, dtype=np.int64)
        self._backbone_config: dict | None = None
        self._train_generator: torch.Generator | None = None
        self._pending_generator_state: torch.Tensor | None = None
        self._sampler_seed: int | None = None
        self._pending_sampler_seed: int | None = None
        self._images: ImageDataset | None = None
        self._positions: dict[str, np.ndarray] = {}
        self._class_index = np.empty(0, dtype=np.int64)
        self._class_codes = np.empty(0, dtype=np.int64)

    # ----------------------------------------------------------------------------------------- set-up
    def set_data_config(
        self, size: int | tuple[int, int], mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        """The backbone's input size and normalisation (see ``data_config_from_backbone``)."""
        self._backbone_config = {"size": size, "mean": tuple(mean), "std": tuple(std)}

    @property
    def data_config(self) -> dict:
        """Input ``size``, ``mean``, ``std``: explicit arguments, else the backbone's, else ImageNet's."""
        backbone = self._backbone_config or {}
        if not backbone and self.image_size is None:
            rank_zero_warn(
                "ReIDDataModule: no data config from the backbone (set_data_config) and no image_size; "
                f"using {DEFAULT_IMAGE_SIZE} px"
            )
        return {
            "size": self.image_size or backbone.get("size", DEFAULT_IMAGE_SIZE),
            "mean": tuple(self.mean or backbone.get("mean", IMAGENET_DEFAULT_MEAN)),
            "std": tuple(self.std or backbone.get("std", IMAGENET_DEFAULT_STD)),
        }

    def _write_synthetic(self) -> tuple[Path, Path]:
        # imported here, so that `python -m reid_lightning.data.synthetic` does not import itself twice
        from .synthetic import make_synthetic_individuals

        root = (Path(self.root) if self.root is not None else DEFAULT_SYNTHETIC_ROOT).resolve()
        return make_synthetic_individuals(root, seed=self.seed, **self.synthetic_options), root

    def prepare_data(self) -> None:
        """Write the synthetic demo set when it is used (reused when already complete)."""
        if self.synthetic:
            self._write_synthetic()

    def _resolve_source(self) -> tuple[Path | pd.DataFrame, Path | None]:
        if self.synthetic:
            return self._write_synthetic()
        root = Path(self.root) if self.root is not None else None
        if isinstance(self.metadata, pd.DataFrame):
            return self.metadata, root
        if root is not None and not root.is_dir():
            raise FileNotFoundError(f"data root '{root}' (--data.root) is not a folder; set it to the image folder")
        if self.metadata is None:
            csv = root / "metadata.csv"  # type: ignore[operator]
            if not csv.is_file():
                raise FileNotFoundError(
                    f"no metadata given and '{csv}' does not exist; pass metadata=<csv path>, or "
                    "synthetic=True for the demo set"
                )
            return csv.resolve(), root
        csv = find_metadata_csv(self.metadata, root).resolve()
        # paths in a CSV are most naturally relative to the CSV itself
        return csv, root if root is not None else csv.parent

    def setup(self, stage: str | None = None) -> None:
        """Load and validate the metadata and every image, split it and index the images (once)."""
        if self._images is not None:
            return
        source, root = self._resolve_source()
        csv_path = None if isinstance(source, pd.DataFrame) else source
        df = load_metadata(source, root, check_files=False, unknown_markers=self.unknown_markers)
        if self.img_load == "auto":
            img_load = "bbox" if "bbox" in df.columns else "full"
        else:
            img_load = self.img_load
        bad = check_images(df, root, img_load=img_load, csv_path=csv_path, progress=self._is_reporter())
        if len(bad):
            source_name = "metadata DataFrame" if csv_path is None else f"metadata '{csv_path}'"
            message = bad_images_message(bad, len(df), source_name, csv_path)
            if self.on_bad_image == "error":
                raise ValueError(message)
            rank_zero_warn(message.rsplit("\n", 1)[0] + f"\non_bad_image='skip': these {len(bad)} rows are left out")
            df = df.drop(index=bad["row"])
        self.skipped_images = bad
        # split on positions 0..M-1; the dataset keeps the metadata rows for its messages
        splits = split_metadata(
            df.reset_index(drop=True), self.split, test_ratio=self.test_ratio, val_ratio=self.val_ratio,
            open_ratio=self.open_ratio, seed=self.seed,
        )
        if splits["train"].empty:
            raise ValueError(f"split '{self.split}' left no training images; lower test_ratio/val_ratio")
        self.root = str(root) if root is not None else None
        self._images = ImageDataset(df, root=root, img_load=img_load)
        self._groups = sequence_codes(df) if self.exclude_same_sequence else np.full(len(df), -1, dtype=np.int64)
        self._positions = {name: frame.index.to_numpy() for name, frame in splits.items()}
        train_codes = self._images.labels[self._positions["train"]]
        self._class_index, self._class_codes = contiguous_classes(train_codes)
        if self.protocol == "database":
            for stage_name in ("val", "test"):
                codes = self._images.labels[self._positions[stage_name]]
                if len(codes) and not np.isin(codes, self._class_codes).any():
                    rank_zero_warn(
                        f"ReIDDataModule: no {stage_name} query has its identity among the training images "
                        f"(split='{self.split}'), so database retrieval cannot find any match; use "
                        "protocol='leave_one_out' for identity-disjoint splits"
                    )
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
        summary = self.summary()
        written = write_new_file(log_dir / "data_summary.txt", (summary + "\n").encode())
        print(f"{summary}\ndata summary written to {written}")
        if len(self.skipped_images):
            skipped = write_new_file(log_dir / "skipped_images.csv", self.skipped_images.to_csv(index=False).encode())
            print(f"{len(self.skipped_images)} rows with unusable images skipped; listed in {skipped}")

    def _require_setup(self) -> ImageDataset:
        if self._images is None:
            raise RuntimeError("ReIDDataModule is not set up yet; call setup() first")
        return self._images

    # ----------------------------------------------------------------------------------------- facts
    @property
    def num_classes(self) -> int:
        """Number of training identities (classes of a classification loss)."""
        self._require_setup()
        return len(self._class_codes)

    @property
    def identity_names(self) -> dict[int, str]:
        """Identity code → name (unknown animals: negative codes → ``"unknown"``)."""
        return dict(self._require_setup().labels_map)

    @property
    def class_names(self) -> list[str]:
        """Training class index → identity name."""
        names = self._require_setup().labels_map
        return [names[int(code)] for code in self._class_codes]

    @property
    def class_codes(self) -> np.ndarray:
        """(num_classes,) identity code of every training class index."""
        self._require_setup()
        return self._class_codes.copy()

    def dataset(self, split: str, *, train_transform: bool = False) -> ImageDataset:
        """Images of ``split`` (train/val/test) with the evaluation (or training) transform, global codes."""
        if split not in SPLIT_NAMES:
            raise ValueError(f"split must be one of {list(SPLIT_NAMES)}, got {split!r}")
        subset = self._require_setup().get_subset(self._positions[split])
        config = self.data_config
        subset.transform = build_transforms(
            image_size=config["size"], mean=config["mean"], std=config["std"], train=train_transform,
            **self.augmentation,
        )
        return subset

    def eval_datasets(self, stage: str) -> list[ImageDataset]:
        """Datasets of the ``val``/``test`` loaders, in loader order: ``[query, gallery]`` or ``[query]``."""
        if stage not in ("val", "test"):
            raise ValueError(f"stage must be 'val' or 'test', got {stage!r}")
        queries = self.dataset(stage)
        return [queries, self.dataset("train")] if self.protocol == "database" else [queries]

    def eval_groups(self, stage: str) -> list[np.ndarray]:
        """Sequence codes (-1: none) of the images of :meth:`eval_datasets`, in the same order."""
        self._require_setup()
        stages = [stage, "train"] if self.protocol == "database" else [stage]
        return [self._groups[self._positions[name]] for name in stages]

    # ----------------------------------------------------------------------------------------- loaders
    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(), **kwargs,
        )

    def _eval_loader(self, dataset: ImageDataset, groups: np.ndarray | None = None) -> DataLoader:
        samples = ReIDSamples(dataset, dataset.labels, with_index=True, groups=groups)
        return self._loader(samples, batch_size=self.eval_batch_size, shuffle=False)

    def train_dataloader(self) -> DataLoader:
        """Augmented training images; an incomplete last batch is dropped (one image breaks BatchNorm).

        The shuffling (and the loader workers' seeds) come from the loader's own generator, whose state is
        part of :meth:`state_dict`, so a resumed fit draws the same batches as an uninterrupted one.
        """
        samples = ReIDSamples(self.dataset("train", train_transform=True), self._class_index)
        self._train_generator = torch.Generator()
        if self._pending_generator_state is not None:
            self._train_generator.set_state(self._pending_generator_state)
            self._pending_generator_state = None
        else:  # seeded from the global generator, so that seed_everything decides the order
            self._train_generator.manual_seed(int(torch.randint(2**62, ()).item()))
        if self.m_per_class is not None:
            if self._pending_sampler_seed is not None:
                self._sampler_seed, self._pending_sampler_seed = self._pending_sampler_seed, None
            else:
                self._sampler_seed = int(torch.randint(2**62, (), generator=self._train_generator))
            trainer = self.trainer
            sampler = MPerClassSampler(
                self._class_index, m=self.m_per_class, batch_size=self.batch_size, seed=self._sampler_seed,
                num_replicas=trainer.world_size if trainer is not None else 1,
                rank=trainer.global_rank if trainer is not None else 0,
            )
            return self._loader(samples, batch_size=self.batch_size, sampler=sampler, drop_last=True,
                                generator=self._train_generator)
        return self._loader(
            samples, batch_size=self.batch_size, shuffle=True, drop_last=len(samples) > self.batch_size,
            generator=self._train_generator,
        )

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
        return self._eval_loader(self.dataset("train"))

    def _stage_loaders(self, stage: str) -> list[DataLoader]:
        self._require_setup()
        if len(self._positions[stage]) == 0:
            return []
        return [self._eval_loader(dataset, groups)
                for dataset, groups in zip(self.eval_datasets(stage), self.eval_groups(stage))]

    def val_dataloader(self) -> list[DataLoader]:
        """``[query, gallery]`` (database) or ``[query]`` (leave_one_out) loaders; ``[]`` if no val images."""
        return self._stage_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        """``[query, gallery]`` (database) or ``[query]`` (leave_one_out) loaders over the test images."""
        return self._stage_loaders("test")

    def predict_dataloader(self) -> DataLoader:
        """The new photos (``predict_dir`` / ``predict_csv``; default: the test images) with the evaluation
        transform; batches ``{"image", "label": -1, "index"}``. Unreadable files are left out and listed in
        :attr:`unreadable_predict_images`."""
        dataset = self.predict_dataset()
        return self._loader(ReIDSamples(dataset, np.full(len(dataset), -1), with_index=True),
                            batch_size=self.eval_batch_size, shuffle=False)

    def predict_dataset(self) -> ImageDataset:
        """Images ``predict`` identifies, with the evaluation transform (see :meth:`predict_dataloader`)."""
        if self.predict_dir is None and self.predict_csv is None:
            return self.dataset("test")
        if self._predict_images is not None:
            return self._predict_images
        frame, root, csv_path = predict_inputs(predict_dir=self.predict_dir, predict_csv=self.predict_csv)
        img_load = "bbox" if "bbox" in frame.columns else "full"
        bad = check_images(frame, root, img_load=img_load, csv_path=csv_path, progress=self._is_reporter())
        if len(bad):
            source = f"predict_csv '{csv_path}'" if csv_path is not None else f"predict_dir '{self.predict_dir}'"
            rank_zero_warn(f"{source}: {len(bad)} of {len(frame)} images cannot be read and get no prediction: "
                           + "; ".join(f"'{row.path}': {row.reason}" for row in bad.head(10).itertuples())
                           + (" ..." if len(bad) > 10 else ""))
            frame = frame.drop(index=bad["row"])
        if frame.empty:
            raise ValueError(f"none of the {len(bad)} images to predict can be read (see the list above)")
        self.unreadable_predict_images = bad
        self._predict_images = self._with_eval_transform(ImageDataset(frame, root=root, img_load=img_load))
        return self._predict_images

    def predict_gallery(self) -> ImageDataset:
        """The known individuals ``predict`` searches: ``gallery_csv``, else every labelled image of the data set
        (the training images when predicting the test split), with the evaluation transform."""
        if self.gallery_csv is not None:
            csv = find_metadata_csv(self.gallery_csv, None).resolve()
            frame = load_metadata(csv, csv.parent, check_files=False, unknown_markers=self.unknown_markers)
            img_load = "bbox" if "bbox" in frame.columns else "full"
            bad = check_images(frame, csv.parent, img_load=img_load, csv_path=csv, progress=self._is_reporter())
            if len(bad):
                raise ValueError(bad_images_message(bad, len(frame), f"gallery_csv '{csv}'", csv))
            frame = frame[frame["identity"] != "unknown"]
            return self._with_eval_transform(ImageDataset(frame, root=csv.parent, img_load=img_load))
        images = self._require_setup()
        if self.predict_dir is None and self.predict_csv is None:
            return self.dataset("train")
        return self._with_eval_transform(images.get_subset(images.labels >= 0))

    def _with_eval_transform(self, dataset: ImageDataset) -> ImageDataset:
        config = self.data_config
        dataset.transform = build_transforms(image_size=config["size"], mean=config["mean"], std=config["std"],
                                             train=False, **self.augmentation)
        return dataset

    # ----------------------------------------------------------------------------------------- report
    def summary(self) -> str:
        """Images, identities, single-image identities and unknown animals per split; queries whose identity
        is not in the gallery; rows skipped as bad images."""
        images = self._require_setup()
        lines = [f"{'split':<6} {'images':>7} {'identities':>10} {'single-image':>12} {'unknown':>8}"]
        for name in SPLIT_NAMES:
            codes = images.labels[self._positions[name]]
            identities, counts = np.unique(codes[codes >= 0], return_counts=True)
            lines.append(f"{name:<6} {len(codes):>7} {len(identities):>10} {int((counts == 1).sum()):>12} "
                         f"{int((codes < 0).sum()):>8}")
        for stage in ("val", "test"):
            codes = images.labels[self._positions[stage]]
            if self.protocol == "database":
                unmatched = ~np.isin(codes, self._class_codes)
                gallery = f"gallery = {len(self._positions['train'])} training images"
            else:
                values, counts = np.unique(codes, return_counts=True)
                unmatched = (codes < 0) | np.isin(codes, values[counts == 1])
                gallery = "gallery = the other images of the split"
            lines.append(
                f"{stage} ({self.protocol}): {len(codes)} queries, {int(unmatched.sum())} without their "
                f"identity in the gallery; {gallery}"
            )
        lines.append(f"training classes: {self.num_classes}")
        lines.append(f"unknown identity: {int((images.labels < 0).sum())} rows (markers {list(self.unknown_markers)}, "
                     "case and spaces ignored)")
        lines.append(f"skipped as bad images: {len(self.skipped_images)} rows (on_bad_image='{self.on_bad_image}')")
        return "\n".join(lines)


PREDICT_EXTENSIONS = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp")


def predict_inputs(*, predict_dir: str | None, predict_csv: str | None
                   ) -> tuple[pd.DataFrame, Path | None, Path | None]:
    """``(metadata, root, csv path)`` of the photos to identify: every image file under ``predict_dir`` (sorted,
    recursive), or the rows of ``predict_csv`` (``path``; optional ``image_id``, ``bbox``)."""
    if predict_dir is not None:
        folder = Path(predict_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"--data.predict_dir '{predict_dir}' is not a folder")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in PREDICT_EXTENSIONS)
        if not files:
            raise ValueError(f"--data.predict_dir '{predict_dir}' holds no image ({', '.join(PREDICT_EXTENSIONS)})")
        paths = [str(p.resolve()) for p in files]
        frame = pd.DataFrame({"image_id": [str(p.relative_to(folder)) for p in files], "path": paths})
        frame["identity"] = "unknown"
        return load_metadata(frame, None, check_files=False), None, None
    csv = Path(predict_csv).expanduser().resolve()  # type: ignore[arg-type]
    if not csv.is_file():
        raise FileNotFoundError(f"--data.predict_csv '{predict_csv}' does not exist")
    frame = pd.read_csv(csv, dtype=str, keep_default_na=False)
    if "path" not in frame.columns:
        raise ValueError(f"--data.predict_csv '{csv}' needs a 'path' column; found {list(frame.columns)}")
    if "image_id" not in frame.columns:
        frame["image_id"] = frame["path"]
    frame["identity"] = "unknown"
    if "bbox" in frame.columns:
        frame["bbox"] = frame["bbox"].replace("", None)
    return load_metadata(frame, csv.parent, check_files=False), csv.parent, csv


def sequence_codes(metadata: pd.DataFrame) -> np.ndarray:
    """(N,) integer code of every row's sequence (first of ``SEQUENCE_COLUMNS`` present); -1 where blank."""
    column = next((name for name in SEQUENCE_COLUMNS if name in metadata.columns), None)
    if column is None:
        return np.full(len(metadata), -1, dtype=np.int64)
    values = metadata[column]
    blank = values.isna() | values.astype(str).str.strip().eq("")
    codes = np.full(len(metadata), -1, dtype=np.int64)
    codes[~blank.to_numpy()] = pd.factorize(values[~blank].astype(str))[0]
    return codes
