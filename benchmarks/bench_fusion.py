"""The three parts of test-time reranking side by side: the global model alone, each local matcher alone, and the
fusion chosen on validation (``PairwiseReranker``, ``fusion="auto"``); optionally the fusion over a shortlist widened
by local matching against one image of every identity (``IdentityWidening``).

    python benchmarks/bench_fusion.py --root ../shared/data/zebra --ckpt_path CKPT --image_size 128 \\
        --matchers mnn --shortlist 100 --out /tmp/f
    python benchmarks/bench_fusion.py --root ../shared/data/zebra --untrained resnet18 --image_size 224 \\
        --matchers mnn --candidates 217 --out /tmp/f
    python benchmarks/bench_fusion.py --root ../shared/data/dogfaces --ckpt_path CKPT --image_size 112 \\
        --matchers mnn lightglue --candidates 20 --local_shortlist 20 --max_queries 150 --calibration_queries 150 \\
        --out /tmp/f
    python benchmarks/bench_fusion.py --root ../shared/data/dogfaces --ckpt_path CKPT --image_size 112 \\
        --extractor aliked disk --matchers mnn --candidates 50 --local_shortlist 50 --out /tmp/f
    python benchmarks/bench_fusion.py --root ../shared/data/dogfaces --metadata /tmp/small-catalogue/dogs35-draw0.csv \\
        --pretrained tf_efficientnet_lite0 --image_size 112 --matchers mnn --candidates 1000 --out /tmp/f

The split is the fine-tuning benchmark's (closed, test 0.3, validation 0.1, seed 0): test queries against the
training images. Local only = the match counts of one matcher on ALIKED and/or DISK (``--extractor``) keypoints
(256 at 256 px): ``lightglue`` (adaptive on CPU, confidence > 0.5, as ``configs/rerank/aliked_lightglue.yaml``) or
``mnn`` (mutual nearest neighbours, Lowe's ratio 0.8, as ``configs/rerank/aliked_mnn.yaml`` and
``configs/rerank/disk_mnn.yaml``), ranking the whole gallery, or the global top-``local_shortlist`` when given
(stated); ties keep the global order. Fused = the global score and the count of every extractor x matcher, calibrated
and fused by the rule chosen out of fold on the validation shortlists, over the top-``shortlist`` (``auto``: by
validation recall up to ``candidates``). Features and pair scores are cached in a fresh folder under ``--out`` (kept
with ``--warm_cache``), so the local-only passes run cold, the first of each extractor extracting its features, and
the other parts reuse their matching: the cost of each part is stated as the distinct test pairs it matches per query
times the seconds per pair of the cold local-only passes. A fused row's ceiling is the best top-1 any fusion increasing
in every score could reach on its shortlists (``fusion_ceiling``); every candidate rule's test top-1 is printed
beside the validation figures that chose one, for reference. Prints a Markdown table and one JSON line.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import torch

from reid_lightning.data import ReIDDataModule
from reid_lightning.features import AlikedExtractor, DiskExtractor
from reid_lightning.models import ReIDModule
from reid_lightning.retrieval import RetrievalResults
from reid_lightning.similarity import (
    IdentityWidening,
    PairScorer,
    PairwiseReranker,
    choose_shortlist,
    fusion_ceiling,
    shortlist_recall,
)
from reid_lightning.similarity.fusion import candidate_rules, reranked_top1
from reid_lightning.similarity.pairwise import CollectCounts, MatchDescriptors, MatchLightGlue

MATCHERS = ("lightglue", "mnn")


def scorer(matcher: str, cache_dir: Path, extractor: str = "aliked") -> PairScorer:
    """ALIKED or DISK (256 keypoints at 256 px) matched by LightGlue (as ``configs/rerank/aliked_lightglue.yaml``)
    or by mutual nearest neighbours with Lowe's ratio 0.8 (as ``configs/rerank/aliked_mnn.yaml``); both matchers
    share the extracted features."""
    if matcher == "lightglue":
        match = MatchLightGlue(features=extractor, depth_confidence=0.9, width_confidence=0.95,
                               collector=CollectCounts(thresholds=[0.5]))
    else:
        match = MatchDescriptors(ratio_threshold=0.8, collector=CollectCounts(thresholds=[0.0]))
    keypoints = (AlikedExtractor if extractor == "aliked" else DiskExtractor)(max_num_keypoints=256)
    return PairScorer(matcher=match, extractor=keypoints, image_size=256, cache_dir=cache_dir,
                      name=f"{extractor}_{matcher}")


def pairs_per_query(results: RetrievalResults, shortlist: int, extra: torch.Tensor | None = None) -> float:
    """Distinct test pairs matched per query: the top-``shortlist`` slots, plus ``extra`` ``(Q, K)`` ones."""
    matched = torch.zeros(results.candidate_indices.shape, dtype=torch.bool)
    matched[:, :shortlist] = True
    if extra is not None:
        matched |= extra
    return float((matched & results.candidate_valid.cpu()).sum()) / results.num_queries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True)
    parser.add_argument("--ckpt_path", help="the global model (a fine-tuned checkpoint)")
    parser.add_argument("--untrained", help="or a timm backbone with random weights, e.g. resnet18")
    parser.add_argument("--pretrained", help="or a timm backbone with its pretrained weights, zero-shot, e.g. "
                        "tf_efficientnet_lite0")
    parser.add_argument("--metadata", help="a metadata CSV of --root's photos to use instead of its metadata.csv "
                        "(e.g. a draw of bench_small_catalogue.py)")
    parser.add_argument("--image_size", type=int, default=128)
    parser.add_argument("--shortlist", default="auto", help="fused shortlist B, or auto (validation recall)")
    parser.add_argument("--candidates", type=int, default=100, help="candidates kept: the largest B")
    parser.add_argument("--local_shortlist", type=int, default=None, help="local only over the global top-B "
                        "(default: the whole gallery)")
    parser.add_argument("--max_queries", type=int, default=None, help="test queries used (seeded random subset)")
    parser.add_argument("--calibration_queries", type=int, default=None,
                        help="validation queries the calibrators and the fusion are fitted on (seeded random subset)")
    parser.add_argument("--widen_keep", type=int, default=None,
                        help="also fuse over a shortlist widened by local matching: the global top-N kept")
    parser.add_argument("--widen_shortlist", type=int, default=20, help="the widened shortlist's size B")
    parser.add_argument("--extractor", nargs="+", choices=("aliked", "disk"), default=["aliked"],
                        help="local keypoints: every extractor is matched by every matcher")
    parser.add_argument("--matchers", nargs="+", choices=MATCHERS, default=["lightglue"],
                        help="local scorers: each alone (local only), and all of them fused with the global score")
    parser.add_argument("--warm_cache", action="store_true",
                        help="keep the pair scores and features already in --out/cache (the seconds then exclude the "
                             "cached work)")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    torch.manual_seed(0)
    out = Path(args.out)
    cache = out / "cache"
    if not args.warm_cache:  # the local-only passes must run cold: their seconds per pair are the unit
        shutil.rmtree(cache, ignore_errors=True)
    if args.ckpt_path:
        model = ReIDModule.load_from_checkpoint(args.ckpt_path, map_location="cpu", weights_only=True)
        name = f"fine-tuned {model.hparams.backbone}"
    elif args.pretrained:
        model = ReIDModule(backbone=args.pretrained, pretrained=True)
        name = f"zero-shot pretrained {args.pretrained}"
    else:
        model = ReIDModule(backbone=args.untrained, pretrained=False)
        name = f"untrained {args.untrained}"
    # no trainer attaches the model here: its preprocessing (e.g. Lite0's mean/std 0.5) is passed explicitly
    data = ReIDDataModule(root=args.root, metadata=args.metadata, split="closed", test_ratio=0.3, val_ratio=0.1, seed=0,
                          image_size=args.image_size, mean=model.input_config["mean"], std=model.input_config["std"],
                          batch_size=32)
    data.setup("test")
    searcher = model.searcher
    gallery_dataset = data.dataset("train")
    gallery, gallery_labels = model.embed(data.eval_loader(gallery_dataset))
    whole = len(gallery_dataset)

    def retrieve(split: str, k: int):
        dataset = data.dataset(split)
        query, labels = model.embed(data.eval_loader(dataset))
        return dataset, searcher(query, gallery, query_labels=labels, gallery_labels=gallery_labels, k=k)

    val_dataset, validation = retrieve("val", whole if args.widen_keep is not None else args.candidates)
    test_dataset, test = retrieve("test", whole)
    if args.max_queries and test.num_queries > args.max_queries:
        keep = PairwiseReranker.calibration_subset(test.num_queries, max_queries=args.max_queries)
        test, test_positions = test.select(keep), keep
    else:
        test_positions = torch.arange(test.num_queries)
    recall = shortlist_recall(validation.head(args.candidates))
    shortlist = choose_shortlist(validation.head(args.candidates)) if args.shortlist == "auto" else int(
        args.shortlist)
    rows = {"global only": dict(test.metrics(top_k=(1, 5)), pairs_per_query=0.0, seconds_per_query=0.0)}

    def scorers() -> list[PairScorer]:
        return [scorer(m, cache, e) for e in args.extractor for m in args.matchers]

    # one cold local-only pass per scorer, in the order given: the first of each extractor extracts its features
    seconds_per_pair = {}
    for local_scorer in scorers():
        local = PairwiseReranker([local_scorer], shortlist=args.local_shortlist or whole, include_global=False)
        start = time.perf_counter()
        counts = local.pair_scores(test, test_dataset, gallery_dataset, query_positions=test_positions)
        local_pairs = pairs_per_query(test, local.shortlist)
        seconds_per_pair[local_scorer.name] = (time.perf_counter() - start) / (local_pairs * test.num_queries)
        rows[f"local only, {local_scorer.name} (top-{local.shortlist})"] = dict(
            test.rerank(next(iter(counts.values()))).metrics(top_k=(1, 5)), pairs_per_query=local_pairs,
            seconds_per_query=local_pairs * seconds_per_pair[local_scorer.name])
    every_pair = sum(seconds_per_pair.values())  # a fused pair is matched by every scorer

    fused = PairwiseReranker(scorers(), shortlist=shortlist, include_global=True, fusion="auto")
    fitted_on, val_scores = fused.fit_scores(validation.head(args.candidates), val_dataset, gallery_dataset,
                                             max_queries=args.calibration_queries)
    fused.fit_calibrators(val_scores, hits=fitted_on.hits)
    scores = fused.pair_scores(test, test_dataset, gallery_dataset, query_positions=test_positions)
    test_probabilities = fused.calibrate(scores)
    reranked = fused.rerank(test, test_probabilities)
    # for reference only (the choice is made on validation): every candidate rule fitted on the same pairs, on test
    val_probabilities = fused.calibrate(val_scores)
    val_hits = fitted_on.hits[:, : next(iter(val_scores.values())).shape[1]].cpu()
    every_rule = {rule.name: float(reranked_top1(rule.fit(val_probabilities, val_hits)(test_probabilities),
                                                 test.hits).float().mean())  # as metrics(): over every query
                  for rule in candidate_rules(list(val_scores), fused.weights)}
    fused_pairs = pairs_per_query(test, shortlist)
    rows[f"fused, {fused.fusion_report.chosen} (top-{shortlist})"] = dict(
        reranked.metrics(top_k=(1, 5)), pairs_per_query=fused_pairs, seconds_per_query=fused_pairs * every_pair,
        ceiling=fusion_ceiling(scores, test.hits))
    out.mkdir(parents=True, exist_ok=True)
    fused.save(out / "calibration")
    reports = {"fused": dict(fused.fusion_report.to_dict(), test_top1=every_rule)}

    if args.widen_keep is not None:
        widening = IdentityWidening(keep=args.widen_keep)
        widened = PairwiseReranker(scorers(), shortlist=args.widen_shortlist, include_global=True, fusion="auto",
                                   widening=widening)
        widened.fit(validation, val_dataset, gallery_dataset, max_queries=args.calibration_queries)
        chosen = widened.widened_shortlist(test, test_dataset, gallery_dataset, query_positions=test_positions)
        representatives = widening.representatives(test)
        test_widened = test.promote(chosen)
        scores = widened.pair_scores(test_widened, test_dataset, gallery_dataset, query_positions=test_positions)
        reranked = widened.rerank(test_widened, widened.calibrate(scores))
        rows[f"fused, {widened.fusion_report.chosen}, widened (global top-{args.widen_keep} + identities by local "
             f"matching, top-{args.widen_shortlist})"] = dict(
            reranked.metrics(top_k=(1, 5)), ceiling=fusion_ceiling(scores, test_widened.hits),
            pairs_per_query=pairs_per_query(test, 0, representatives | chosen),
            # the representatives are matched by the first scorer, the widened shortlist by every scorer
            seconds_per_query=pairs_per_query(test, 0, representatives) * next(iter(seconds_per_pair.values()))
            + pairs_per_query(test, 0, chosen) * every_pair)
        widened.save(out / "calibration-widened")
        reports["widened"] = widened.fusion_report.to_dict()

    print(f"\n{args.root}: global model {name}, {args.image_size} px; {test.num_queries} test queries x "
          f"{whole} gallery images; validation recall@B {json.dumps(recall)}; fusion chosen out of fold on "
          f"{min(validation.num_queries, args.calibration_queries or validation.num_queries)} validation queries "
          f"(test_top1: every rule's test top-1, for reference): {json.dumps(reports)}; seconds per pair of each "
          f"local-only pass (the first of each extractor extracts its features{', warm cache: cached work excluded' if args.warm_cache else ''}): "
          f"{json.dumps(seconds_per_pair)}")
    print("| part | top-1 | top-5 | mAP | fusion ceiling | pairs / query | s / query |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for part, row in rows.items():
        ceiling = f"{row['ceiling']:.3f}" if "ceiling" in row else ""
        print(f"| {part} | {row['top1']:.3f} | {row['top5']:.3f} | {row['mAP']:.3f} | {ceiling} | "
              f"{row['pairs_per_query']:.0f} | {row['seconds_per_query']:.2f} |")
    print(json.dumps({"global": name, "shortlist": shortlist, "recall": recall, "rows": rows,
                      "seconds_per_pair": seconds_per_pair, "fusion": reports}, default=float))


if __name__ == "__main__":
    main()
