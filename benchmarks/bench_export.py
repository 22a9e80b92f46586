"""The exported bundle against the torch model on a real data set: same embeddings, same ``predictions.csv`` as
``train.py predict``, and the runtime's speed, size and export time (optionally an int8 variant).

A few photos of some known individuals and every photo (up to ``--new-photos``) of ``--new-individuals`` others
are kept out of the gallery and asked as new photos. The model (``--backbone`` at ``--image-size``, pretrained
unless ``--from-scratch``; ``--epochs`` of fine-tuning, 0: as it is) gets its open-set threshold, calibration and
discovery cut from ``validate`` on the known individuals. Then, each as a user runs it:
``train.py predict``, ``python -m reid_lightning.export`` (timed), ``python -m reid_lightning.runtime``; the two
CSVs are compared, and the runtime's embeddings of every gallery image against the torch ones in the bundle.

Speed: images/s of the runtime (decode, resize, onnxruntime) against torch eval (the data module's eval loader and
``ReIDModule.embed``), batch 32, both on ``--threads`` threads, on the same photos; runs alternate and the best of
``--repeats`` is reported. ``--int8`` adds onnxruntime's dynamic int8 quantisation: its top-1 answers on the new
photos and its speed.

    python benchmarks/bench_export.py                                           # ImageNet Lite0, 224 px, zebra
    python benchmarks/bench_export.py --backbone resnet18 --image-size 64 --from-scratch --epochs 10
                                                                                # the demo network (demo.yaml)
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import numpy as np
import pandas as pd
import torch

from reid_lightning.data import ReIDDataModule
from reid_lightning.models import ReIDModule
from reid_lightning.runtime.identifier import Identifier

REPO = Path(__file__).resolve().parent.parent


def split_photos(root: Path, work: Path, *, new_individuals: int, new_photos: int, known_asked: int,
                 seed: int) -> tuple[Path, Path]:
    """known.csv (the gallery and validation) and a folder of links to the photos asked as new."""
    metadata = pd.read_csv(root / "metadata.csv")
    rng = np.random.default_rng(seed)
    identities = rng.permutation(sorted(metadata["identity"].astype(str).unique()))
    new_ids, asked_ids = set(identities[:new_individuals]), identities[new_individuals:new_individuals + 10]
    asked = [metadata[metadata["identity"].astype(str).isin(new_ids)].groupby("identity").head(new_photos)]
    for identity in asked_ids:
        asked.append(metadata[metadata["identity"].astype(str) == identity].head(known_asked))
    asked = pd.concat(asked)
    known = metadata.drop(asked.index)
    known = known[~known["identity"].astype(str).isin(new_ids)]
    known.to_csv(work / "known.csv", index=False)
    photos = work / "photos"
    photos.mkdir()
    for row in asked.itertuples():
        (photos / f"{row.identity}__{Path(row.path).name}").symlink_to((root / row.path).resolve())
    return work / "known.csv", photos


def run(command: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"{' '.join(command[:4])} ... failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - started


def compare(ours: pd.DataFrame, theirs: pd.DataFrame) -> dict[str, float]:
    exact = ["image_id", "identity", "is_new", "gallery_image", "proposed_identity"]
    return {"rows": len(ours), "rows_predict": len(theirs),
            **{f"equal_{name}": int((ours[name].astype(str) == theirs[name].astype(str)).sum()) for name in exact},
            "max_score_difference": float(np.abs(ours["score"] - theirs["score"]).max()),
            "max_confidence_difference": float(np.abs(ours["confidence"] - theirs["confidence"]).max())}


def speed(model: ReIDModule, data: ReIDDataModule, bundle: Path, paths: list[str], *, model_file: str | None,
          threads: int, repeats: int) -> dict[str, float]:
    """Best images/s of torch eval and of the runtime (with ``model_file`` in place of the bundle's network), from
    the photos (decode, resize, network) and of the networks alone on a batch of 32."""
    identifier = Identifier(bundle, batch_size=32, threads=threads)
    if model_file:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        identifier.session = onnxruntime.InferenceSession(model_file, options, providers=["CPUExecutionProvider"])
    dataset = data.known_individuals()
    loader = data.eval_loader(dataset)
    torch.set_num_threads(threads)
    size = identifier.height, identifier.width
    pixels = np.random.default_rng(0).integers(0, 256, (32, *size, 3), dtype=np.uint8)
    tensor = torch.randn(32, 3, *size)
    best = {"torch": 0.0, "runtime": 0.0, "network_torch": 0.0, "network_runtime": 0.0}
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            model.embed(loader)
        best["torch"] = max(best["torch"], len(dataset) / (time.perf_counter() - started))
        started = time.perf_counter()
        identifier.embed(paths)
        best["runtime"] = max(best["runtime"], len(paths) / (time.perf_counter() - started))
        started = time.perf_counter()
        with torch.no_grad():
            model(tensor)
        best["network_torch"] = max(best["network_torch"], 32 / (time.perf_counter() - started))
        started = time.perf_counter()
        identifier.session.run(None, {identifier.manifest["input"]["name"]: pixels})
        best["network_runtime"] = max(best["network_runtime"], 32 / (time.perf_counter() - started))
    return {name: round(value, 1) for name, value in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=str(REPO.parent / "shared" / "data" / "zebra"))
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--from-scratch", action="store_true", help="random initial weights")
    parser.add_argument("--epochs", type=int, default=0, help="fine-tuning epochs before export (0: none)")
    parser.add_argument("--new-individuals", type=int, default=4)
    parser.add_argument("--new-photos", type=int, default=12)
    parser.add_argument("--known-asked", type=int, default=2, help="photos asked of each of 10 known individuals")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--int8", action="store_true", help="also measure onnxruntime dynamic int8 quantisation")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    root = Path(args.root).resolve()
    work = Path(tempfile.mkdtemp(prefix="bench_export_"))
    known, photos = split_photos(root, work, new_individuals=args.new_individuals, new_photos=args.new_photos,
                                 known_asked=args.known_asked, seed=args.seed)
    model_args = ["--model.backbone", args.backbone, "--model.pretrained", str(not args.from_scratch).lower()]
    data_args = ["--data.root", str(root), "--data.metadata", str(known), "--data.image_size", str(args.image_size),
                 "--data.val_ratio", "0.3", "--data.num_workers", "0"]
    torch.manual_seed(args.seed)
    data = ReIDDataModule(root=str(root), metadata=str(known), image_size=args.image_size, val_ratio=0.3,
                          num_workers=0)
    model = ReIDModule(backbone=args.backbone, pretrained=not args.from_scratch)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        max_epochs=args.epochs, default_root_dir=work, num_sanity_val_steps=0)
    if args.epochs:
        trainer.fit(model, datamodule=data)
    else:
        trainer.validate(model, datamodule=data)
    checkpoint = work / "model.ckpt"
    trainer.save_checkpoint(checkpoint)
    common = [*model_args, *data_args, "--ckpt_path", str(checkpoint), "--trainer.enable_progress_bar", "false"]

    predict_s = run([sys.executable, str(REPO / "train.py"), "predict", *common, "--data.predict_dir", str(photos),
                     "--trainer.accelerator", "cpu", "--predict_output", str(work / "predict.csv")], cwd=work)
    export_s = run([sys.executable, "-m", "reid_lightning.export", *common, "--output", str(work / "bundle")],
                   cwd=work)
    runtime_s = run([sys.executable, "-m", "reid_lightning.runtime", str(work / "bundle"), "--photos", str(photos),
                     "--output", str(work / "runtime.csv")], cwd=work)
    figures: dict[str, object] = {
        "backbone": args.backbone, "image_size": args.image_size, "pretrained": not args.from_scratch,
        "epochs": args.epochs, "export_s": round(export_s, 1), "predict_cli_s": round(predict_s, 1),
        "runtime_cli_s": round(runtime_s, 1),
        "bundle_mb": round(sum(p.stat().st_size for p in (work / "bundle").iterdir()) / 1e6, 2),
        "onnx_mb": round((work / "bundle" / "model.onnx").stat().st_size / 1e6, 2)}
    ours, theirs = pd.read_csv(work / "runtime.csv"), pd.read_csv(work / "predict.csv")
    figures["predictions"] = compare(ours, theirs)

    identifier = Identifier(work / "bundle", threads=args.threads)
    gallery = identifier.gallery
    embedded = identifier.embed(gallery.paths)
    cosine = (embedded * gallery.embeddings).sum(1) / (
        np.linalg.norm(embedded, axis=1) * np.linalg.norm(gallery.embeddings, axis=1))
    figures["embedding_cosine"] = {"images": len(cosine), "min": float(cosine.min()), "mean": float(cosine.mean())}

    data.image_size = (args.image_size, args.image_size)
    model.eval()
    figures["images_per_s"] = speed(model, data, work / "bundle", gallery.paths, model_file=None,
                                    threads=args.threads, repeats=args.repeats)
    if args.int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantised = work / "model.int8.onnx"
        quantize_dynamic(str(work / "bundle" / "model.onnx"), str(quantised), weight_type=QuantType.QUInt8)
        int8 = Identifier(work / "bundle", threads=args.threads)
        import onnxruntime

        int8.session = onnxruntime.InferenceSession(str(quantised), providers=["CPUExecutionProvider"])
        rows, _ = int8.identify([str(p) for p in sorted(photos.iterdir())],
                                image_ids=[p.name for p in sorted(photos.iterdir())])
        int8_answers = pd.DataFrame(rows).set_index("image_id")["identity"]
        fp32_answers = ours.set_index("image_id")["identity"]
        quantised_embeddings = int8.embed(gallery.paths)
        int8_cosine = (quantised_embeddings * embedded).sum(1) / (
            np.linalg.norm(quantised_embeddings, axis=1) * np.linalg.norm(embedded, axis=1))
        truth = ours["image_id"].str.split("__").str[0].set_axis(ours["image_id"])
        figures["int8"] = {
            "onnx_mb": round(quantised.stat().st_size / 1e6, 2),
            "answers_changed": int((int8_answers.loc[fp32_answers.index] != fp32_answers).sum()),
            "answers": len(fp32_answers),
            "right_fp32": int((fp32_answers == truth.where(truth.isin(gallery.identities), "new_individual")).sum()),
            "right_int8": int((int8_answers.loc[fp32_answers.index]
                               == truth.where(truth.isin(gallery.identities), "new_individual")).sum()),
            "embedding_cosine_min": float(int8_cosine.min()),
            "images_per_s": speed(model, data, work / "bundle", gallery.paths, model_file=str(quantised),
                                  threads=args.threads, repeats=args.repeats)["runtime"]}
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
