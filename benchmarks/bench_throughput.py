"""Framework overhead: embedding through the eval loader + module, and one training epoch of ``fit``, each against
plain PyTorch doing the same work (same model, batches, augmentation, loss, optimizer).

(b) images/s of ``ReIDModule.embed(eval loader)`` (decoding, transforms, eval mode, precision context) against a
bare ``backbone`` forward on the same images pre-decoded to tensors, same batch size.
(c) seconds of one training epoch of ``Trainer.fit`` (no validation, no checkpoint, no logger) against a plain loop
over the same training loader with the module's own loss and optimizer.
Runs alternate (A, B, A, B, ...) so that a busy machine slows both alike; the best of each is reported.

    python benchmarks/bench_throughput.py              # demo data (40 individuals x 12), ResNet-18 at 64 px
"""

from __future__ import annotations

import argparse
import tempfile
import time

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from reid_lightning.data import ReIDDataModule
from reid_lightning.models import ReIDModule


def make(root: str, image_size: int, batch_size: int, num_workers: int = 0) -> tuple[ReIDModule, ReIDDataModule]:
    data = ReIDDataModule(synthetic_dir=root, synthetic=True, image_size=image_size, batch_size=batch_size,
                          val_ratio=0.0, test_ratio=0.3, num_workers=num_workers)
    data.prepare_data()
    data.setup("fit")
    torch.manual_seed(0)
    model = ReIDModule(backbone="resnet18", pretrained=False, loss="softmax", num_classes=data.num_classes,
                       optimizer={"class_path": "torch.optim.AdamW", "init_args": {"lr": 2e-3, "weight_decay": 0.0}})
    return model, data


class EpochTimer(Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.start


def lightning_epoch(root: str, image_size: int, batch_size: int) -> float:
    model, data = make(root, image_size, batch_size)
    timer = EpochTimer()
    trainer = L.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[timer])
    trainer.fit(model, datamodule=data)
    return timer.seconds


def plain_epoch(root: str, image_size: int, batch_size: int) -> float:
    model, data = make(root, image_size, batch_size)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.0)
    loader = data.train_dataloader()
    model.train()
    start = time.perf_counter()
    for batch in loader:
        optimizer.zero_grad()
        loss = model.loss_fn(model(batch["image"]), batch["label"])
        loss.backward()
        optimizer.step()
    return time.perf_counter() - start


def embedding(root: str, image_size: int, batch_size: int, num_workers: int) -> tuple[float, float]:
    """(module + eval loader, bare forward on pre-decoded tensors) images per second."""
    model, data = make(root, image_size, batch_size, num_workers)
    loader = data.gallery_dataloader()
    decoded = [batch["image"] for batch in loader]
    count = sum(len(b) for b in decoded)
    start = time.perf_counter()
    model.embed(loader)
    framework = count / (time.perf_counter() - start)
    backbone = model.backbone.eval()
    start = time.perf_counter()
    with torch.inference_mode():
        for images in decoded:
            backbone(images)
    bare = count / (time.perf_counter() - start)
    return framework, bare


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--num-workers", type=int, nargs="+", default=[0, 1],
                        help="eval loader worker processes to measure (b) with")
    parser.add_argument("--only", nargs="+", default=["embedding", "epoch"], choices=["embedding", "epoch"])
    args = parser.parse_args()
    root = tempfile.mkdtemp()
    options = (root, args.image_size, args.batch_size)
    for workers in args.num_workers if "embedding" in args.only else []:
        embed_runs = [embedding(*options, workers) for _ in range(args.repeats)]
        framework, bare = max(r[0] for r in embed_runs), max(r[1] for r in embed_runs)
        print(f"(b) embedding, {torch.get_num_threads()} threads, {workers} loader workers: module + eval loader "
              f"{framework:.1f} img/s, bare forward on decoded tensors {bare:.1f} img/s -> {framework / bare:.2f}x",
              flush=True)
    if "epoch" not in args.only:
        return
    fit_runs, plain_runs = [], []
    for _ in range(args.repeats):
        fit_runs.append(lightning_epoch(*options))
        plain_runs.append(plain_epoch(*options))
    print(f"(c) one training epoch: Trainer.fit {min(fit_runs):.2f} s, plain loop {min(plain_runs):.2f} s -> "
          f"{min(fit_runs) / min(plain_runs):.2f}x  (all runs: fit {[round(t, 2) for t in fit_runs]}, "
          f"plain {[round(t, 2) for t in plain_runs]})")


if __name__ == "__main__":
    main()
