"""LightningCLI wiring: ``python train.py fit|validate|test|predict --config configs/...``.

Every ``validate``/``test`` run writes its final metrics to ``results.json`` in the run's log dir and prints
that path on its last line; ``predict`` writes ``predictions.csv`` (which known individual, or a new one, every new
photo shows) there, or to ``--predict_output``. Files are written
atomically and never replace another run's (``results-1.json`` ... when the name is taken, e.g. in a shared
log dir). Checkpoints carry the random states (:class:`RandomState`) so that ``fit --ckpt_path`` resumes
exactly, and every ``--ckpt_path`` is read with ``weights_only=True``. With a W&B logger, the whole resolved
config (what ``config.yaml`` holds) is the W&B run's config.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger

from .callbacks import LastCheckpoint, RandomState
from .data import ReIDDataModule
from .models import ReIDModule
from .rundir import run_log_dir, write_new_file

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


def resolved_config(parser, config) -> dict[str, Any]:
    """A parsed CLI config as the nested dict of plain JSON values that ``config.yaml`` holds (every argument,
    defaults included, ``class_path``/``init_args`` as written)."""
    # skip_none (deprecated in newer jsonargparse) is what Lightning writes config.yaml with: the same content
    return json.loads(parser.dump(config, format="json", skip_none=False))


class SaveConfigToWandb(SaveConfigCallback):
    """Writes ``config.yaml`` to the log dir (Lightning's behaviour) and, on rank 0, sends the whole resolved CLI
    config (model, data, trainer with its callbacks and logger, checkpoint, ...) to the run config of every
    :class:`~lightning.pytorch.loggers.WandbLogger`, so a W&B run records how to reproduce it."""

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        config = resolved_config(self.parser, self.config)
        for logger in loggers:
            logger.experiment.config.update(config, allow_val_change=True)


class ReIDCLI(LightningCLI):
    """LightningCLI with a configurable checkpoint callback (``--checkpoint.*``), ``results.json`` output and the
    resolved config as the W&B run config."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_callback", SaveConfigToWandb)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        super().__init__(*args, **kwargs)

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        parser.add_lightning_class_args(RandomState, "random_state")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_argument("--predict_output", type=str | None, default=None,
                            help="predict: where predictions.csv goes (default: the run's log dir)")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        model, checkpoint = config.get("model"), config.get("checkpoint")
        if model is None or checkpoint is None or model.get("exact_metrics", True):
            return
        # metrics from the top-K candidates are named mAP@K: the default monitor follows (a user's choice stays)
        depth = model["candidates"]
        if checkpoint.get("monitor") == CHECKPOINT_DEFAULTS["checkpoint.monitor"]:
            checkpoint["monitor"] = f"val/mAP@{depth}"
            if checkpoint.get("filename") == CHECKPOINT_DEFAULTS["checkpoint.filename"]:
                checkpoint["filename"] = f"epoch{{epoch:03d}}-mAP@{depth}={{val/mAP@{depth}:.4f}}"

    def _load_weights_only(self) -> None:
        # a --ckpt_path is a file the user passes: never unpickle code from it (torch < 2.6 defaults to False)
        config = self.config_init[self.subcommand]
        if config.get("weights_only") is None:
            config["weights_only"] = True

    before_fit = before_validate = before_test = before_predict = _load_weights_only

    def after_validate(self) -> None:
        self.last_results_path = write_results(self.trainer, "validate", self._ckpt_path())

    def after_test(self) -> None:
        self.last_results_path = write_results(self.trainer, "test", self._ckpt_path())

    def after_predict(self) -> None:
        self.last_results_path = write_predictions(self.trainer, self.config[self.subcommand].get("predict_output"))

    def _ckpt_path(self) -> str | None:
        return self.config.get(self.subcommand, {}).get("ckpt_path")


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
    path = run_log_dir(trainer) / "results.json"
    if trainer.is_global_zero:
        record = {"stage": stage, "ckpt_path": ckpt_path, "metrics": metrics}
        path = write_new_file(path, json.dumps(record, indent=2).encode())
        width = max((len(name) for name in metrics), default=10)
        print(f"\n{'metric':<{width}}  value")
        for name, value in metrics.items():
            print(f"{name:<{width}}  {value:.4f}" if isinstance(value, float) else f"{name:<{width}}  {value}")
        print(f"results written to {path}")
    return path


def write_predictions(trainer, output: str | None) -> Path:
    """Write the module's ``predictions.csv`` (and ``unreadable_images.csv`` when some inputs could not be read),
    print a summary and, last, the path of ``predictions.csv``."""
    path = Path(output).expanduser() if output else run_log_dir(trainer) / "predictions.csv"
    if not trainer.is_global_zero:
        return path
    frame = trainer.lightning_module.predictions
    path.parent.mkdir(parents=True, exist_ok=True)
    unreadable = getattr(trainer.datamodule, "unreadable_predict_images", None)
    if unreadable is not None and len(unreadable):
        listed = write_new_file(path.with_name("unreadable_images.csv"), unreadable.to_csv(index=False).encode())
        print(f"{len(unreadable)} images could not be read and have no prediction; listed in {listed}")
    path = write_new_file(path, frame.to_csv(index=False).encode())
    answers = trainer.lightning_module.answers
    print(f"{len(frame)} photos: {int((~frame['is_new']).sum())} known individuals, {int(frame['is_new'].sum())} "
          f"new (threshold {answers.threshold:.4f} on the {answers.score})")
    print(f"predictions written to {path}")
    return path


def main(args: list[str] | None = None) -> ReIDCLI:
    """Entry point of ``train.py``."""
    # every rank computes the evaluation from all gathered embeddings and logs identical values on purpose
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    torch.set_float32_matmul_precision("high")
    return ReIDCLI(ReIDModule, ReIDDataModule, args=args)
