"""Fine-tuning recipes on a real data set, side by side: trained from scratch (the demo recipe), the pretrained
model zero-shot, the MegaDescriptor recipe as written, the pretrained fine-tuning recipe, and that recipe with one
choice left out at a time (``--ablate``).

    python benchmarks/bench_finetune.py --root ../shared/data/dogfaces --image_size 112 --epochs 8 \\
        --out /tmp/finetune-dogfaces
    python benchmarks/bench_finetune.py --root ../shared/data/zebra --image_size 128 --epochs 20 --ablate \\
        --out /tmp/finetune-zebra

Every run goes through ``train.py`` (``reid_lightning.cli.main``) on the same closed split (test queries against the
training images); trained recipes are tested with their best checkpoint by ``val/mAP``. Results are appended to
``<out>/results.json`` after each run (a rerun skips the recipes already there) and printed as a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs"
REPORTED = ("top1", "top5", "mAP", "maxF1")


def recipes(backbone: str, ablate: bool) -> dict[str, tuple[str, list[str]]]:
    """name -> (how it runs: "fit" or "zero_shot", extra CLI arguments)."""
    pretrained = ["--config", str(CONFIGS / "finetune_pretrained.yaml"), "--model.backbone", backbone]
    chosen = {
        "scratch (demo recipe: ResNet-18, softmax, AdamW 2e-3)": ("fit", ["--config", str(CONFIGS / "demo.yaml")]),
        f"zero-shot {backbone}": ("zero_shot", pretrained),
        f"{backbone}, MegaDescriptor recipe (SGD 1e-3, no warmup)": ("fit", [
            "--config", str(CONFIGS / "megadescriptor_finetune.yaml"), "--model.backbone", backbone,
            "--trainer.precision", "32-true"]),
        f"{backbone}, fine-tuning recipe": ("fit", pretrained),
    }
    if ablate:  # each choice of the recipe flipped, one at a time
        recipe = yaml.safe_load((CONFIGS / "finetune_pretrained.yaml").read_text())
        scale = recipe["model"]["backbone_lr_scale"]
        warmup = recipe["lr_scheduler"]["init_args"]["warmup_fraction"]
        decay = recipe["model"]["weight_decay_norm_bias"]
        frozen = recipe["freeze_backbone"]["epochs"]
        class_means = recipe.get("class_mean_head", {}).get("enabled", False)
        flips = {
            f"  backbone lr scale {0.1 if scale == 1 else 1.0} instead of {scale}":
                ["--model.backbone_lr_scale", str(0.1 if scale == 1 else 1.0)],
            f"  warmup {0.1 if warmup == 0 else 0.0} of the run instead of {warmup}":
                ["--lr_scheduler.init_args.warmup_fraction", str(0.1 if warmup == 0 else 0.0)],
            f"  weight decay on norms and biases {'off' if decay else 'on'}":
                ["--model.weight_decay_norm_bias", str(not decay).lower()],
            f"  backbone frozen for {1 if frozen == 0 else 0} epochs instead of {frozen}":
                ["--freeze_backbone.epochs", str(1 if frozen == 0 else 0)],
            f"  class centres {'random' if class_means else 'at the class means'} at the start":
                ["--class_mean_head.enabled", str(not class_means).lower()],
        }
        chosen.update({name: ("fit", [*pretrained, *flip]) for name, flip in flips.items()})
    return chosen


def run(kind: str, arguments: list[str], common: list[str]) -> dict:
    from reid_lightning.cli import main

    start = time.perf_counter()
    if kind == "zero_shot":
        tested = main(["test", *arguments, *common])
        fit_seconds, checkpoint = 0.0, None
    else:
        fitted = main(["fit", *arguments, *common])
        fit_seconds = time.perf_counter() - start
        checkpoint = fitted.trainer.checkpoint_callback.best_model_path
        tested = main(["test", *arguments, *common, "--ckpt_path", checkpoint])
    metrics = json.loads(Path(tested.last_results_path).read_text())["metrics"]
    return {"fit_seconds": round(fit_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
            "checkpoint": checkpoint, **{name: metrics[f"test/{name}"] for name in REPORTED},
            "num_queries": metrics["test/num_queries"], "gmean": metrics.get("test/open/gmean")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="data folder with metadata.csv")
    parser.add_argument("--out", required=True, help="folder for logs, checkpoints and results.json")
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch_size", type=int, default=32)
    parser.add_argument("--ablate", action="store_true", help="also the recipe without each of its choices")
    parser.add_argument("--only", default=None, help="comma-separated substrings of the recipe names to run")
    args = parser.parse_args()

    root = str(Path(args.root).resolve())
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # logs/ and checkpoints/ of every run land here
    common = ["--data.root", root, "--data.split", "closed", "--data.test_ratio", "0.3", "--data.val_ratio", "0.1",
              "--data.seed", "0", "--data.image_size", str(args.image_size), "--data.batch_size",
              str(args.batch_size), "--data.num_workers", "0", "--trainer.max_epochs", str(args.epochs),
              "--trainer.enable_progress_bar", "false", "--seed_everything", "0"]
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name, (kind, arguments) in recipes(args.backbone, args.ablate).items():
        if name in results or (args.only and not any(part in name for part in args.only.split(","))):
            continue
        results[name] = run(kind, arguments, common)
        results_path.write_text(json.dumps(results, indent=2))

    print(f"\n{root}: closed split, {args.image_size} px, {args.epochs} epochs, batch {args.batch_size}; "
          f"{next(iter(results.values()))['num_queries']} test queries against the training images")
    print("| recipe | top-1 | top-5 | mAP | maxF1 | fit min |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in results.items():
        print(f"| {name.strip()} | {row['top1']:.3f} | {row['top5']:.3f} | {row['mAP']:.3f} | {row['maxF1']:.3f} | "
              f"{row['fit_seconds'] / 60:.1f} |")


if __name__ == "__main__":
    main()
