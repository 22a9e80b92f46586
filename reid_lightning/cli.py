"""LightningCLI wiring: ``python train.py fit|validate|test|predict --config configs/...``.

Every ``validate``/``test`` run writes its final metrics to ``results.json`` in the run's log dir and prints
that path on its last line; ``predict`` writes ``predictions.csv`` through the :class:`PredictionWriter`
(``--predict_output``). Files are written atomically and never replace another run's (``results-1.json`` ...).
Each ``fit`` keeps its checkpoints in ``checkpoints/<run>/`` and points ``checkpoints/last.ckpt`` at the newest.
``--optimizer`` / ``--lr_scheduler`` take any torch optimizer / scheduler (class path + init args). With
``--ckpt_path`` the architecture comes from the checkpoint (a conflicting ``--model.*`` is an error) and every
``--ckpt_path`` is read with ``weights_only=True``. With a W&B logger, the whole resolved config is the W&B run's.
"""

from __future__ import annotations

import json
import math
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.cli import LightningCLI, LRSchedulerTypeTuple, SaveConfigCallback
from lightning.pytorch.loggers import WandbLogger
from torch.optim import Optimizer

from .callbacks import (
    ClassMeanHead,
    FreezeBackbone,
    LastCheckpoint,
    PredictionWriter,
    RandomState,
    ZeroShotBaseline,
)
from .cli_errors import ConfigurationError, ReIDArgumentParser, friendly_errors, where_given
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
}
TRAINER_DEFAULTS = {
    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"save_dir": "logs"}},
}
ARCHITECTURE = ("backbone", "backbone_init_args", "projection_dim", "loss", "sub_centers", "num_classes")
"""``--model.*`` arguments that must match a ``--ckpt_path`` checkpoint (its weights only fit that network)."""


def resolved_config(parser, config) -> dict[str, Any]:
    """A parsed CLI config as the nested dict of plain JSON values that ``config.yaml`` holds (every argument,
    defaults included, ``class_path``/``init_args`` as written)."""
    # skip_none (deprecated in newer jsonargparse) is what Lightning writes config.yaml with: the same content
    return json.loads(parser.dump(config, format="json", skip_none=False))


class SaveConfigToWandb(SaveConfigCallback):
    """Writes ``config.yaml`` to the run's own log dir (also with W&B, whose ``trainer.log_dir`` is the shared
    ``logs/``) and, on rank 0, sends the whole resolved CLI config to the run config of every
    :class:`~lightning.pytorch.loggers.WandbLogger`, so a W&B run records how to reproduce it."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = run_log_dir(trainer)  # a broadcast under DDP: every rank calls it
        if trainer.is_global_zero:
            self.parser.save(self.config, str(log_dir / self.config_filename), skip_none=False,
                             overwrite=self.overwrite, multifile=self.multifile)
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer, pl_module, stage: str) -> None:
        loggers = [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]
        if not loggers:
            return
        config = resolved_config(self.parser, self.config)
        for logger in loggers:
            logger.experiment.config.update(config, allow_val_change=True)


class ReIDCLI(LightningCLI):
    """LightningCLI with a configurable checkpoint callback (``--checkpoint.*``), the prediction writer
    (``--predict_writer.*``, ``--predict_output``), the zero-shot baseline (``--zero_shot.*``), a frozen-backbone
    start (``--freeze_backbone.epochs``), class-mean loss centres (``--class_mean_head.enabled``), optimizer and
    scheduler class paths linked to the model, ``results.json`` output and the resolved config as the W&B run
    config."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_callback", SaveConfigToWandb)
        kwargs.setdefault("save_config_kwargs", {"overwrite": True})
        kwargs.setdefault("parser_class", ReIDArgumentParser)
        given = kwargs.get("args")  # None: the real command line
        self.command_line = list(given) if isinstance(given, (list, tuple)) else sys.argv[1:]
        super().__init__(*args, **kwargs)

    def init_parser(self, **kwargs: Any):
        parser = super().init_parser(**kwargs)
        parser.command_line = self.command_line
        return parser

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_lightning_class_args(LastCheckpoint, "checkpoint")
        parser.add_lightning_class_args(RandomState, "random_state")
        parser.add_lightning_class_args(ZeroShotBaseline, "zero_shot")
        parser.add_lightning_class_args(FreezeBackbone, "freeze_backbone")
        parser.add_lightning_class_args(ClassMeanHead, "class_mean_head")
        parser.add_lightning_class_args(PredictionWriter, "predict_writer")
        parser.set_defaults(CHECKPOINT_DEFAULTS)
        parser.add_argument("--predict_output", type=str | None, default=None,
                            help="predict: where predictions.csv goes (default: the run's log dir)")
        parser.link_arguments("predict_output", "predict_writer.output")
        parser.add_optimizer_args((Optimizer,), link_to="model.optimizer")
        parser.add_lr_scheduler_args(LRSchedulerTypeTuple, link_to="model.lr_scheduler")

    def _parse_ckpt_path(self) -> None:
        """Take the architecture from a ``--ckpt_path`` checkpoint, refusing a conflicting ``--model.*``.

        Replaces LightningCLI's rule (every saved hyperparameter overrides the command line, silently): evaluation
        settings (``candidates``, ``search_backend``, ``open_set_threshold``, ...) stay the user's, and no pretrained
        weights are loaded (the checkpoint's replace them)."""
        subcommand = self.config.get("subcommand")
        config = self.config.get(subcommand) if subcommand else self.config  # no subcommand: run=False (export)
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if not ckpt_path or not Path(ckpt_path).is_file():
            return
        saved = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        model = config["model"]
        for name in ARCHITECTURE:
            if name not in saved:
                continue
            given, source = model.get(name), where_given(f"model.{name}", self.command_line)
            if source is not None and given != saved[name]:
                raise ConfigurationError(
                    f"--model.{name} {given!r} (from {source}) conflicts with the checkpoint {ckpt_path}, whose model "
                    f"has {name} {saved[name]!r}: its weights only fit that network. Pass --model.{name} "
                    f"{saved[name]!r} (or leave it out), or give another --ckpt_path")
            model[name] = saved[name]
        model["pretrained"], model["init_ckpt"] = False, None

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

    def _before_run(self) -> None:
        config = self.config_init[self.subcommand]
        # a --ckpt_path is a file the user passes: never unpickle code from it (torch < 2.6 defaults to False)
        if config.get("weights_only") is None:
            config["weights_only"] = True
        if "verbose" in config:  # our own table (write_results) replaces Lightning's one column per loader
            config["verbose"] = False

    before_fit = before_validate = before_test = before_predict = _before_run

    def after_validate(self) -> None:
        self.last_results_path = write_results(self.trainer, "validate", self._ckpt_path())

    def after_test(self) -> None:
        self.last_results_path = write_results(self.trainer, "test", self._ckpt_path())

    def after_predict(self) -> None:
        writer = next(c for c in self.trainer.callbacks if isinstance(c, PredictionWriter))
        self.last_results_path = writer.path

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


def main(args: list[str] | None = None) -> ReIDCLI:
    """Entry point of ``train.py``."""
    # every rank computes the evaluation from all gathered embeddings and logs identical values on purpose
    warnings.filterwarnings("ignore", message=".*when logging on epoch level in distributed setting.*")
    torch.set_float32_matmul_precision("high")
    with friendly_errors():
        return ReIDCLI(ReIDModule, ReIDDataModule, args=args)
