"""LightningCLI wiring: ``python train.py fit|validate|test|predict --config configs/...``.

Every ``validate``/``test`` run writes its final metrics to ``results.json`` in the run's log dir and prints
that path on its last line; ``predict`` writes the embeddings of the predict set next to it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI

from .callbacks import LastCheckpoint
from .data import ReIDDataModule
from .models import ReIDModule

CHECKPOINT_DEFAULTS = {
    "checkpoint.dirpath": "checkpoints",
    "checkpoint.monitor": "val/mAP",
    "checkpoint.mode": "max",
    "checkpoint.save_last": True,
    "checkpoint.auto_insert_metric_name": False,
    "checkpoint.filename": "epoch{epoch:03d}-mAP{val/mAP:.4f}",
    # `last.ckpt` is always the newest run's, so `--ckpt_path checkpoints/last.ckpt` follows `fit`
    "checkpoint.enable_version_counter": False,
}
TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
}


class ReIDCLI(LightningCLI):
    """LightningCLI with a configurable checkpoint callback (``--checkpoint.*``) and ``results.json`` output."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        parser.set_defaults(CHECKPOINT_DEFAULTS)

    def after_validate(self) -> None:
        self.last_results_path = write_results(self.trainer, "validate", self._ckpt_path())

    def after_test(self) -> None:
        self.last_results_path = write_results(self.trainer, "test", self._ckpt_path())

    def after_predict(self) -> None:
        self.last_results_path = write_embeddings(self.trainer, self._predictions())

    def _ckpt_path(self) -> str | None:
        return self.config.get(self.subcommand, {}).get("ckpt_path")

    def _predictions(self) -> list:
        return self.trainer.predict_loop.predictions


def _log_dir(trainer) -> Path:
    log_dir = Path(trainer.log_dir or trainer.default_root_dir).resolve()
    log_dir.mkdir(parents=True, exist_ok=True)
    return log_dir


def _plain(value: Any) -> float | int:
    number = value.item() if isinstance(value, torch.Tensor) else value
    if isinstance(number, float) and number.is_integer() and not math.isnan(number):
        return int(number) if abs(number) < 2**53 else number
    return number


def write_results(trainer, stage: str, ckpt_path: str | None) -> Path:
    """Write ``results.json`` (metrics of the finished ``stage``), print a table and, last, its path."""
    prefix = "val/" if stage == "validate" else "test/"
    metrics = {name: _plain(value) for name, value in sorted(trainer.callback_metrics.items())
               if name.startswith(prefix)}
    path = _log_dir(trainer) / "results.json"
    if trainer.is_global_zero:
        path.write_text(json.dumps({"stage": stage, "ckpt_path": ckpt_path, "metrics": metrics}, indent=2))
        width = max((len(name) for name in metrics), default=10)
        print(f"\n{'metric':<{width}}  value")
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
        print(f"results written to {path}")
    return path


def write_embeddings(trainer, predictions: list) -> Path:
    """Save the predict set's embeddings (``embeddings.pt``: image_id, identity, embedding) and print the path."""
    batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
    embeddings = torch.cat([b["embedding"] for b in batches])
    indices = torch.cat([b["index"] for b in batches])
    dataset = trainer.datamodule.dataset("test")
    order = torch.argsort(indices)
    metadata = dataset.metadata.iloc[indices[order].numpy()]
    path = _log_dir(trainer) / "embeddings.pt"
    if trainer.is_global_zero:
        torch.save({"image_id": metadata["image_id"].tolist(), "identity": metadata["identity"].tolist(),
                    "embedding": embeddings[order]}, path)
        print(f"embeddings written to {path}")
    return path


def main(args: list[str] | None = None) -> ReIDCLI:
    """Entry point of ``train.py``."""
    torch.set_float32_matmul_precision("high")
    return ReIDCLI(ReIDModule, ReIDDataModule, args=args)
