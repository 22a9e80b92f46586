"""``python -m reid_lightning.export --config CONFIG --data.root DATA --ckpt_path CKPT --output BUNDLE_DIR``:
the trained model and its decisions as one folder that :class:`reid_lightning.runtime.Identifier` answers with,
without torch.

Takes the ``--config`` / ``--model.*`` / ``--data.*`` arguments ``train.py predict`` takes (the gallery is the
one predict searches for new photos: ``--data.gallery_csv``, else every labelled image). The bundle (see
:mod:`reid_lightning.runtime.bundle`) is written in a temporary folder beside ``--output`` and renamed when
complete, so a half-written bundle never looks finished.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import torch
from torch import Tensor, nn

from . import __version__
from .callbacks import PredictionReranker
from .cli import ReIDCLI
from .cli_errors import ConfigurationError, friendly_errors
from .data import ReIDDataModule
from .models import ReIDModule
from .runtime import bundle

INPUT_NAME, OUTPUT_NAME = "pixels", "embedding"
SEARCH_METRICS = ("cosine",)


class PixelsToEmbedding(nn.Module):
    """The exported graph: uint8 RGB ``pixels (B, H, W, 3)`` -> ``(B, D)`` embeddings, with the evaluation
    transform's ``ToTensor`` and ``Normalize`` inside (same float32 operations, same order)."""

    def __init__(self, model: nn.Module, mean, std) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, pixels: Tensor) -> Tensor:
        images = pixels.permute(0, 3, 1, 2).float().div(255)
        return self.model((images - self.mean) / self.std).float()


def export_onnx(model: nn.Module, *, size: tuple[int, int], mean, std, path: Path) -> None:
    """Write ``model`` (eval mode, CPU) wrapped in :class:`PixelsToEmbedding` to ``path`` with a dynamic batch."""
    graph = PixelsToEmbedding(model, mean, std).eval().cpu()
    example = torch.randint(0, 256, (2, *size, 3), dtype=torch.uint8)
    with torch.no_grad():
        torch.onnx.export(graph, (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_shapes=({0: torch.export.Dim("batch")},), dynamo=True, external_data=False,
                          verbose=False)


def _square(size) -> tuple[int, int]:
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


def write_bundle(model: ReIDModule, datamodule: ReIDDataModule, *, output: Path, ckpt_path: str | None,
                 reranked: bool = False, progress: bool = True) -> Path:
    """Export ``model`` (weights and open-set model already loaded) and the gallery of ``datamodule`` to the new
    folder ``output``; returns it."""
    if output.exists():
        raise ConfigurationError(f"--output '{output}' exists: give a new folder (a bundle is never replaced)")
    if model.hparams.metric not in SEARCH_METRICS:
        raise ConfigurationError(f"the model searches by {model.hparams.metric!r}; the runtime searches by "
                                 f"{', '.join(SEARCH_METRICS)}: export a model trained with --model.metric cosine")
    open_set = model.open_set_model
    if open_set is None or open_set.threshold is None:
        raise ConfigurationError("no open-set threshold: the checkpoint holds none (it was trained without "
                                 "validation queries); pass --model.open_set_threshold <score>")
    config = model.input_config
    size = _square(datamodule.image_size or config["size"])
    mean, std = tuple(datamodule.mean or config["mean"]), tuple(datamodule.std or config["std"])
    # the data module's transforms follow these (it has no trainer to ask the model)
    datamodule.image_size, datamodule.mean, datamodule.std = size, mean, std
    model.eval()
    datamodule.prepare_data()
    datamodule.setup("predict")
    gallery = datamodule.known_individuals()
    embeddings, _ = model.embed(datamodule.eval_loader(gallery), progress=progress,
                                description="export: embedding gallery")
    with bundle.staged(output) as staging:
        export_onnx(model, size=size, mean=mean, std=std, path=staging / bundle.MODEL)
        names = gallery.labels_string
        bundle.write_gallery(staging, bundle.Gallery(
            embeddings.cpu().numpy(), [str(i) for i in gallery.metadata["image_id"]], [str(n) for n in names],
            [str(gallery.image_path(i)) for i in range(len(gallery))]))
        open_set.save(staging / bundle.OPEN_SET)
        manifest = {
            "format": bundle.FORMAT, "format_version": bundle.FORMAT_VERSION,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "reid_lightning_version": __version__,
            "input": {"name": INPUT_NAME, "dtype": "uint8", "layout": "NHWC RGB", "height": size[0],
                      "width": size[1], "mean": list(mean), "std": list(std), "normalisation": "inside the graph",
                      "decode": "8-bit RGB, EXIF orientation applied, transparency on grey (128, 128, 128)",
                      "crop": "bbox [x, y, w, h] clipped to the image, when given",
                      "resize": "PIL bilinear to width x height (aspect ratio not kept)"},
            "output": {"name": OUTPUT_NAME, "embedding_size": int(embeddings.shape[1])},
            "search": {"metric": model.hparams.metric, "candidates": int(model.hparams.candidates)},
            "gallery": {"images": len(gallery), "identities": len(set(names.tolist()))},
            "model": {"backbone": model.hparams.backbone, "checkpoint": None if ckpt_path is None else {
                "path": str(Path(ckpt_path).resolve()), "sha256": bundle.sha256(Path(ckpt_path))}},
            "validation": {"open_set_threshold": open_set.threshold, "score": open_set.score,
                           "open_set_gmean": open_set.validation_gmean, "held_out": open_set.held_out,
                           "discovery_threshold": open_set.discovery_threshold,
                           "discovery_ami": open_set.discovery_ami},
            "reranking": ("the run reranks with local features; the bundle answers on the global score only "
                          "(reranking is not in the bundle)") if reranked else None,
        }
        manifest["model"]["onnx_sha256"] = bundle.sha256(staging / bundle.MODEL)
        bundle.finish(staging, manifest)
    return output


class ExportCLI(ReIDCLI):
    """``ReIDCLI``'s arguments without a subcommand, plus ``--ckpt_path`` and ``--output``."""

    def add_arguments_to_parser(self, parser) -> None:
        super().add_arguments_to_parser(parser)
        parser.add_argument("--ckpt_path", type=str | None, default=None,
                            help="the trained checkpoint (read with weights_only=True)")
        parser.add_argument("--output", type=str, required=True, help="the bundle folder to write (new)")


def main(args: list[str] | None = None) -> Path:
    with friendly_errors():
        started = time.perf_counter()
        cli = ExportCLI(ReIDModule, ReIDDataModule, args=args, run=False)
        config = cli.config
        model, datamodule = cli.model, cli.datamodule
        if config.get("ckpt_path"):
            checkpoint = torch.load(config["ckpt_path"], weights_only=True, map_location="cpu")
            model.on_load_checkpoint(checkpoint)
            model.load_state_dict(checkpoint["state_dict"])
        reranked = any(isinstance(c, PredictionReranker) for c in cli.trainer.callbacks)
        output = write_bundle(model, datamodule, output=Path(config["output"]).expanduser(),
                              ckpt_path=config.get("ckpt_path"), reranked=reranked,
                              progress=bool(cli.trainer.progress_bar_callback))
        size = sum(p.stat().st_size for p in output.iterdir())
        print(f"bundle of {size / 1e6:.1f} MB exported in {time.perf_counter() - started:.1f} s")
        print(f"bundle written to {output}")
        return output


if __name__ == "__main__":
    main()  # LightningCLI reads sys.argv
