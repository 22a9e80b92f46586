"""Open-set decision of a trained checkpoint on its data set's test split: the threshold chosen on validation (saved in
the checkpoint) against the two trivial rules (always known, always new).

    python benchmarks/bench_open_set.py --ckpt_path checkpoints/last.ckpt --root /work/shared/data/dogfaces \\
        --split open --image_size 112

Prints one JSON object: the threshold, test BAKS / BAUS / gmean / acc_known / acc_unknown / auroc with it, and
BAKS / BAUS / gmean of both trivial rules.
"""

from __future__ import annotations

import argparse
import json
import math

import lightning as L

from reid_lightning.data import ReIDDataModule
from reid_lightning.inference import top1_decision_inputs
from reid_lightning.metrics import open_set_metrics
from reid_lightning.models import ReIDModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="open")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--test_ratio", type=float, default=0.3)
    parser.add_argument("--val_ratio", type=float, default=0.15)
    parser.add_argument("--batch_size", type=int, default=64)
    args = parser.parse_args()

    model = ReIDModule.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True)
    if model.threshold is None:
        raise SystemExit(f"{args.ckpt_path} holds no open-set threshold (trained without validation?)")
    data = ReIDDataModule(root=args.root, split=args.split, image_size=args.image_size, test_ratio=args.test_ratio,
                          val_ratio=args.val_ratio, batch_size=args.batch_size)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, default_root_dir="/tmp")
    trainer.test(model, datamodule=data, verbose=False)
    inputs = top1_decision_inputs(model.evaluation_results())
    report = {
        "threshold": model.threshold,
        "queries": len(inputs["known"]), "unknown_queries": int((~inputs["known"]).sum()),
        "chosen": open_set_metrics(**inputs, threshold=model.threshold),
        "always_known": open_set_metrics(**inputs, threshold=-math.inf),
        "always_new": open_set_metrics(**inputs, threshold=math.inf),
        "closed_set": model.evaluation_results().metrics(top_k=(1, 5)),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
