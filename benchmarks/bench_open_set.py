"""Who is new, how sure, and which new photos belong together: a trained checkpoint on its data set's open split.

    python benchmarks/bench_open_set.py --ckpt_path checkpoints/last.ckpt --root ../shared/data/dogfaces \\
        --split open --val_unseen_ratio 0.1 --image_size 112

On the validation split, two rules choose the open-set threshold (and the discovery cut):
  * held-out: validation queries of identities the model trained on, with 20 % of those identities removed from
    the gallery (the default when validation has no new identity);
  * unseen: validation identities kept out of training altogether (``--data.val_unseen_ratio``).
Each is applied unchanged to the test split (queries against the training images) and compared with the best
threshold on test (the oracle, never available in practice). Then ``predict`` answers the test photos (held back:
known and unseen individuals) with the checkpoint's own open-set model, and the confidence column is compared
with the raw top-1 cosine: expected calibration error against the answers' correctness, mean of right vs wrong
answers. Last, the test photos of unseen individuals are grouped at each rule's discovery cut.
Prints one JSON object and Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import time

import lightning as L
import torch

from reid_lightning.callbacks import PredictionWriter
from reid_lightning.data import ReIDDataModule
from reid_lightning.inference import choose_threshold, decision_inputs, fit_open_set
from reid_lightning.inference.open_set import answers_right
from reid_lightning.metrics import discovery_metrics, open_set_metrics
from reid_lightning.models import ReIDModule
from reid_lightning.similarity.calibration import expected_calibration_error


def trainer() -> L.Trainer:
    return L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                     default_root_dir="/tmp")


def query_embeddings(model: ReIDModule, data: ReIDDataModule, stage: str) -> torch.Tensor:
    return model.embed(data.eval_loader(data.dataset(stage)))[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt_path", required=True)
    parser.add_argument("--root", required=True)
    parser.add_argument("--split", default="open")
    parser.add_argument("--val_unseen_ratio", type=float, default=0.1)
    parser.add_argument("--image_size", type=int, default=112)
    parser.add_argument("--test_ratio", type=float, default=0.3)
    parser.add_argument("--val_ratio", type=float, default=0.1)
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--out", default="/tmp/bench_open_set_predictions.csv")
    args = parser.parse_args()

    model = ReIDModule.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True)
    data = ReIDDataModule(root=args.root, split=args.split, image_size=args.image_size, test_ratio=args.test_ratio,
                          val_ratio=args.val_ratio, val_unseen_ratio=args.val_unseen_ratio, batch_size=args.batch_size)
    run = trainer()
    run.validate(model, datamodule=data, verbose=False)
    validation = model.evaluation_results()
    val_embeddings = query_embeddings(model, data, "val")
    known = decision_inputs(validation)["known"]
    score = f"top-1 {model.hparams.metric} score"
    rules = {
        "held-out (trained identities removed from the gallery)": fit_open_set(
            validation.select(known), score=score, embeddings=val_embeddings[known]),
        "unseen (identities kept out of training)": fit_open_set(validation, score=score, embeddings=val_embeddings),
    }
    run.test(model, datamodule=data, verbose=False)
    test = model.evaluation_results()
    inputs = decision_inputs(test)
    oracle, oracle_gmean = choose_threshold(**inputs)
    test_embeddings = query_embeddings(model, data, "test")
    unknown = ~inputs["known"]
    report = {"test_queries": len(unknown), "unknown_test_queries": int(unknown.sum()),
              "unknown_test_individuals": len(torch.unique(inputs["query_labels"][unknown])),
              "oracle": {"threshold": oracle, "gmean": oracle_gmean}, "rules": {}}
    for name, rule in rules.items():
        start = time.perf_counter()
        grouped = rule.group(test_embeddings[unknown])
        seconds = time.perf_counter() - start
        report["rules"][name] = {
            "threshold": rule.threshold, "validation_gmean": rule.validation_gmean,
            "test": open_set_metrics(**inputs, threshold=rule.threshold),
            "discovery_cut": rule.discovery_threshold, "discovery_validation_ami": rule.discovery_ami,
            "discovery_test": None if grouped is None else {**discovery_metrics(
                true_labels=inputs["query_labels"][unknown].numpy(), proposed_labels=grouped.groups),
                "seconds": seconds},
        }

    # predict on the held-back test photos with the checkpoint's own open-set model
    writer = PredictionWriter(output=args.out)
    L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, callbacks=[writer],
              default_root_dir="/tmp").predict(model, datamodule=data)
    frame = writer.predictions
    model_inputs = decision_inputs(test)
    is_new = torch.as_tensor(frame["is_new"].to_numpy())
    right = answers_right(model_inputs, is_new).numpy()
    confidence = frame["confidence"].to_numpy()
    raw = frame["score"].to_numpy().clip(0, 1)
    report["predict"] = {
        "photos": len(frame), "answered_new": int(is_new.sum()), "right": float(right.mean()),
        "threshold": model.threshold, "checkpoint_held_out": model.open_set.held_out,
        "ece": {"confidence": expected_calibration_error(confidence, right),
                "raw top-1 cosine": expected_calibration_error(raw, right)},
        "mean_right": {"confidence": float(confidence[right].mean()), "raw top-1 cosine": float(raw[right].mean())},
        "mean_wrong": {"confidence": float(confidence[~right].mean()), "raw top-1 cosine": float(raw[~right].mean())},
    }
    print(json.dumps(report, indent=2, default=float))

    print("\n| threshold rule (chosen on validation) | threshold | val gmean | test BAKS | test BAUS | test gmean |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, row in report["rules"].items():
        t = row["test"]
        print(f"| {name} | {row['threshold']:.4f} | {row['validation_gmean']:.3f} | {t['BAKS']:.3f} | "
              f"{t['BAUS']:.3f} | {t['gmean']:.3f} |")
    print(f"| best threshold on test (oracle) | {oracle:.4f} | | | | {oracle_gmean:.3f} |")
    print("\n| discovery cut from | cut | ARI | AMI | pair F1 | groups | individuals | count error | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in report["rules"].items():
        d = row["discovery_test"]
        if d is not None:
            print(f"| {name} | {row['discovery_cut']:.4f} | {d['ARI']:.3f} | {d['AMI']:.3f} | {d['pair_F1']:.3f} | "
                  f"{int(d['num_groups'])} | {int(d['num_individuals'])} | {int(d['count_error']):+d} | {d['seconds']:.2f} |")
    p = report["predict"]
    print(f"\npredict on {p['photos']} held-back photos ({p['answered_new']} answered new, {p['right']:.3f} right):")
    print("| column | ECE | mean when right | mean when wrong |")
    print("|---|---:|---:|---:|")
    for column in ("confidence", "raw top-1 cosine"):
        print(f"| {column} | {p['ece'][column]:.3f} | {p['mean_right'][column]:.3f} | {p['mean_wrong'][column]:.3f} |")


if __name__ == "__main__":
    main()
