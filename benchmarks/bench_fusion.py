"""The three parts of test-time reranking side by side: the global model alone, local matching alone, and the
fusion chosen on validation (``PairwiseReranker``, ``fusion="auto"``).

    python benchmarks/bench_fusion.py --root ../shared/data/zebra --ckpt_path CKPT --image_size 128 --out /tmp/f
    python benchmarks/bench_fusion.py --root ../shared/data/zebra --untrained resnet18 --image_size 224 --out /tmp/f
    python benchmarks/bench_fusion.py --root ../shared/data/dogfaces --ckpt_path CKPT --image_size 112 \\
        --candidates 20 --local_shortlist 20 --max_queries 300 --calibration_queries 300 --out /tmp/f

The split is the fine-tuning benchmark's (closed, test 0.3, validation 0.1, seed 0): test queries against the
training images. Local only = ALIKED + LightGlue match counts (adaptive on CPU, confidence > 0.5, 256 keypoints at
256 px, as ``configs/rerank/aliked_lightglue.yaml``) ranking the whole gallery, or the global top-``local_shortlist``
when given (stated); ties keep the global order. Fused = the global score and the match count calibrated and fused
by the rule chosen out of fold on the validation shortlists, over the top-``shortlist`` (``auto``: by validation
recall). Features and pair scores are cached, so the parts share their matching. Prints a Markdown table and one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from reid_lightning.data import ReIDDataModule
from reid_lightning.features import AlikedExtractor
from reid_lightning.models import ReIDModule
from reid_lightning.similarity import PairScorer, PairwiseReranker, choose_shortlist, shortlist_recall
from reid_lightning.similarity.pairwise import CollectCounts, MatchLightGlue

REPORTED = ("top1", "top5", "mAP")


def scorer() -> PairScorer:
    matcher = MatchLightGlue(features="aliked", depth_confidence=0.9, width_confidence=0.95,
                             collector=CollectCounts(thresholds=[0.5]))
    return PairScorer(matcher=matcher, extractor=AlikedExtractor(max_num_keypoints=256), image_size=256)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--ckpt_path", help="the global model (a fine-tuned checkpoint)")
    parser.add_argument("--untrained", help="or a timm backbone with random weights, e.g. resnet18")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--shortlist", default="auto", help="fused shortlist B, or auto (validation recall)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates kept: the largest B")
    parser.add_argument("--local_shortlist", type=int, default=None, help="local only over the global top-B "
                        "(default: the whole gallery)")
    parser.add_argument("--max_queries", type=int, default=None, help="test queries used (seeded random subset)")
    parser.add_argument("--calibration_queries", type=int, default=None,
                        help="validation queries the calibrators and the fusion are fitted on (seeded random subset)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    if args.ckpt_path:
        model = ReIDModule.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True)
        name = f"fine-tuned {model.hparams.backbone}"
    else:
        model = ReIDModule(backbone=args.untrained, pretrained=False)
        name = f"untrained {args.untrained}"
    data = ReIDDataModule(root=args.root, split="closed", test_ratio=0.3, val_ratio=0.1, seed=0,
                          image_size=args.image_size, batch_size=32)
    data.setup("test")
    searcher = model.searcher
    gallery_dataset = data.dataset("train")
    gallery, gallery_labels = model.embed(data.eval_loader(gallery_dataset))

    def retrieve(split: str, k: int):
        dataset = data.dataset(split)
        query, labels = model.embed(data.eval_loader(dataset))
        return dataset, searcher(query, gallery, query_labels=labels, gallery_labels=gallery_labels, k=k)

    val_dataset, validation = retrieve("val", args.candidates)
    test_dataset, test = retrieve("test", len(gallery_dataset))
    if args.max_queries and test.num_queries > args.max_queries:
        keep = PairwiseReranker.calibration_subset(test.num_queries, max_queries=args.max_queries)
        test, test_positions = test.select(keep), keep
    else:
        test_positions = torch.arange(test.num_queries)
    recall = shortlist_recall(validation)
    shortlist = choose_shortlist(recall) if args.shortlist == "auto" else int(args.shortlist)
    rows = {"global only": dict(test.metrics(top_k=(1, 5)), seconds_per_query=0.0)}

    local = PairwiseReranker([scorer()], shortlist=args.local_shortlist or len(gallery_dataset),
                             include_global=False)
    start = time.perf_counter()
    counts = local.pair_scores(test, test_dataset, gallery_dataset, query_positions=test_positions)
    local_name = next(iter(counts))
    rows[f"local only (top-{local.shortlist})"] = dict(test.rerank(counts[local_name]).metrics(top_k=(1, 5)),
                                                        seconds_per_query=(time.perf_counter() - start)
                                                        / test.num_queries)

    fused = PairwiseReranker([scorer()], shortlist=shortlist, include_global=True, fusion="auto")
    start = time.perf_counter()
    fused.fit(validation, val_dataset, gallery_dataset, max_queries=args.calibration_queries)
    fit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    scores = fused.pair_scores(test, test_dataset, gallery_dataset, query_positions=test_positions)
    reranked = fused.rerank(test, fused.calibrate(scores))
    rows[f"fused, {fused.fusion_report.chosen} (top-{shortlist})"] = dict(
        reranked.metrics(top_k=(1, 5)), seconds_per_query=(time.perf_counter() - start) / test.num_queries)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    fused.save(Path(args.out) / "calibration")

    print(f"\n{args.root}: global model {name}, {args.image_size} px; {test.num_queries} test queries x "
          f"{len(gallery_dataset)} gallery images; validation recall@B {json.dumps(recall)}; fusion chosen out of "
          f"fold on validation: {fused.fusion_report.chosen} {json.dumps(fused.fusion_report.top1)} "
          f"(fit on {min(validation.num_queries, args.calibration_queries or validation.num_queries)} validation "
          f"queries, {fit_seconds:.0f} s)")
    print("| part | top-1 | top-5 | mAP | s / query |")
    print("|---|---:|---:|---:|---:|")
    for part, row in rows.items():
        print(f"| {part} | {row['top1']:.3f} | {row['top5']:.3f} | {row['mAP']:.3f} | "
              f"{row['seconds_per_query']:.2f} |")
    print(json.dumps({"global": name, "shortlist": shortlist, "recall": recall, "rows": rows,
                      "fusion": fused.fusion_report.to_dict()}, default=float))


if __name__ == "__main__":
    main()
