"""Local-feature reranking: batched matching with features extracted once vs a naive per-pair loop, and the
zero-shot top-1 of ALIKED+LightGlue and DISK+LightGlue. Run by hand (needs /work/shared/data); not a test.

Speed: Q queries x B candidates each, drawn from a shared pool of gallery images (as shortlists of one gallery
are). The naive loop extracts both images of every pair and matches one pair at a time with kornia's own
LightGlue forward; the batched path extracts each image once and scores all pairs with ``score_pairs``. Both
give the same match counts (on CUDA up to a few borderline matches).

Zero-shot top-1 (score: the number of matches above 0.5 confidence): zebra, original query/gallery split
restricted to a random subset of identities; dogfaces, leave-one-out over a random subset of identities.

Modes (``--only modes``): full-depth vs adaptive vs adaptive+symmetric (``--modes-bf16``: + bf16) LightGlue,
pairs/s and leave-one-out top-1 on subsets of both data sets (6 identities x 4 images each by default), all
ordered pairs of the features extracted once. Cache (``--only cache``): one ``PairScorer.score`` pass over a
shortlist (queries x candidates), cold (empty cache folder), warm from disk (a new scorer: a new process's
view), warm from memory (the same scorer) and warm with the feature cache alone, with the number of images
extracted and pairs matched in each. Extraction (``--only extraction``): ALIKED and DISK seconds per image by
batch size vs a plain per-image kornia loop, at 256 and 512 px (best of interleaved rounds).

    python benchmarks/bench_rerank.py                     # CPU: ~5 min on 2 idle cores, longer if shared
    python benchmarks/bench_rerank.py --only modes cache extraction
    python benchmarks/bench_rerank.py --device cuda --zebra-ids 35 --dog-ids 100
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torchvision.transforms as T

from reid_lightning.data.dataset import ImageDataset
from reid_lightning.features import AlikedExtractor, DiskExtractor, LocalFeatures
from reid_lightning.similarity import PairScorer
from reid_lightning.similarity.pair_scorer import symmetric_pairs
from reid_lightning.similarity.pairwise import CollectCounts, MatchLightGlue

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"  # ../shared/data from the repo root

THRESHOLD = 0.5
ZEBRA_SIZE = [192, 320]  # the crops are about 302 x 512 (height x width)
DOG_SIZE = [224, 224]


def dataset(root: Path, metadata: pd.DataFrame, size: list[int]) -> ImageDataset:
    return ImageDataset(metadata, root=root, transform=T.Compose([T.Resize(size), T.ToTensor()]))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def naive_counts(
    extractor, matcher: MatchLightGlue, query, gallery, pairs: torch.Tensor, device: str
) -> tuple[torch.Tensor, float, float]:
    """Extract both images of every pair and match the pair alone with kornia's LightGlue forward.

    Returns the counts and the seconds spent extracting and matching.
    """

    def side(features: LocalFeatures) -> dict[str, torch.Tensor]:
        n = int(features.num_keypoints)
        features = features.to(matcher.device)
        return {
            "keypoints": features.keypoints[:, :n],
            "descriptors": features.descriptors[:, :n],
            "image_size": features.image_sizes,
        }

    counts = torch.zeros(len(pairs))
    extract_seconds = match_seconds = 0.0
    for row, (i, j) in enumerate(pairs.tolist()):
        start = time.perf_counter()
        features = extractor([query[i], gallery[j]])
        extracted = time.perf_counter()
        with torch.inference_mode():
            out = matcher.model({"image0": side(features[0]), "image1": side(features[1])})
        counts[row] = (out["scores"][0] > THRESHOLD).sum().item()
        sync(device)
        extract_seconds += extracted - start
        match_seconds += time.perf_counter() - extracted
    return counts, extract_seconds, match_seconds


def batched_counts(
    extractor, matcher: MatchLightGlue, query, gallery, pairs: torch.Tensor, device: str
) -> tuple[torch.Tensor, float, float]:
    """Extract every image once, then score all pairs in batches; returns counts and seconds as above."""
    start = time.perf_counter()
    query_features, gallery_features = extractor(query), extractor(gallery)
    sync(device)
    extracted = time.perf_counter()
    counts = matcher.score_pairs(query_features, gallery_features, pairs)
    sync(device)
    return counts, extracted - start, time.perf_counter() - extracted


def speed(args, zebra: pd.DataFrame, root: Path) -> None:
    rng = np.random.default_rng(0)
    split = (
        pd.read_csv(root / "extra.csv").set_index("image_id").loc[zebra.image_id, "original_split"].to_numpy()
    )
    query_rows = rng.choice(np.flatnonzero(split == "query"), args.queries, replace=False)
    pool_rows = rng.choice(np.flatnonzero(split == "gallery"), args.pool, replace=False)
    query = dataset(root, zebra.iloc[query_rows], ZEBRA_SIZE)
    pool = dataset(root, zebra.iloc[pool_rows], ZEBRA_SIZE)
    pairs = torch.tensor(
        [(q, g) for q in range(args.queries) for g in rng.choice(args.pool, args.candidates, replace=False)]
    )
    extractor = AlikedExtractor(device=args.device, progress=False)
    matcher = MatchLightGlue(  # today's full depth: what the naive loop's kornia forward does too
        "aliked", collector=CollectCounts([THRESHOLD]), device=args.device, progress=False, adaptive=False
    )
    batched_counts(extractor, matcher, query, pool, pairs[:4], args.device)  # warm-up

    load_before = os.getloadavg()[0]
    # the machine is shared: time the batched path before and after the naive loop and average the two
    first = batched_counts(extractor, matcher, query, pool, pairs, args.device)
    naive_scores, naive_extract, naive_match = naive_counts(
        extractor, matcher, query, pool, pairs, args.device
    )
    second = batched_counts(extractor, matcher, query, pool, pairs, args.device)
    assert torch.equal(first[0], second[0])
    batched_scores = first[0]
    batched_extract, batched_match = (first[1] + second[1]) / 2, (first[2] + second[2]) / 2
    naive_total, batched_total = naive_extract + naive_match, batched_extract + batched_match
    pairs_count = len(pairs)

    difference = (naive_scores - batched_scores).abs()
    print(
        f"\n## Speed: ALIKED+LightGlue, {args.queries} queries x {args.candidates} candidates from a pool of "
        f"{args.pool} zebra images ({pairs_count} pairs), device={args.device}, "
        f"threads={torch.get_num_threads()}, load average {load_before:.1f} -> {os.getloadavg()[0]:.1f}\n"
    )
    print("| path | images extracted | extract s | match s | total s | pairs/s |")
    print("|---|---:|---:|---:|---:|---:|")
    print(
        f"| naive loop (extract both, match one pair) | {2 * pairs_count} | {naive_extract:.1f} | "
        f"{naive_match:.1f} | {naive_total:.1f} | {pairs_count / naive_total:.2f} |"
    )
    print(
        f"| batched, features extracted once | {args.queries + args.pool} | {batched_extract:.1f} | "
        f"{batched_match:.1f} | {batched_total:.1f} | {pairs_count / batched_total:.2f} |"
    )
    print(
        f"\nend-to-end speed-up {naive_total / batched_total:.1f}x (matching alone "
        f"{naive_match / batched_match:.1f}x); counts equal on {int((difference == 0).sum())}/{pairs_count} "
        f"pairs, max |difference| {difference.max():.0f}, mean count {batched_scores.mean():.1f}"
    )
    # CPU gives identical counts; CUDA's half-precision attention and batch-dependent convolution algorithms
    # move a few borderline matches across the threshold
    tolerance = torch.maximum(torch.tensor(3.0), 0.1 * naive_scores)
    assert (difference <= tolerance).all(), "batched and naive scores differ beyond rounding"


def top1(scores: torch.Tensor, query_labels: np.ndarray, gallery_labels: np.ndarray) -> float:
    best = scores.nan_to_num(-torch.inf).argmax(dim=1).numpy()
    return float(np.mean(gallery_labels[best] == query_labels))


def zero_shot(args, zebra: pd.DataFrame, zebra_root: Path, dogs: pd.DataFrame, dogs_root: Path) -> None:
    rng = np.random.default_rng(1)
    split = pd.read_csv(zebra_root / "extra.csv").set_index("image_id").loc[zebra.image_id, "original_split"]
    ids = rng.choice(zebra.identity.unique(), args.zebra_ids, replace=False)
    chosen = zebra[zebra.identity.isin(ids)]
    zebra_query = chosen[split.loc[chosen.image_id].to_numpy() == "query"]
    zebra_query = zebra_query.groupby("identity").head(args.zebra_queries_per_id)
    zebra_gallery = chosen[split.loc[chosen.image_id].to_numpy() == "gallery"]

    sizes = dogs.groupby("identity").size()
    dog_ids = rng.choice(sizes[sizes >= args.dog_images].index, args.dog_ids, replace=False)
    dog_subset = dogs[dogs.identity.isin(dog_ids)].groupby("identity").head(args.dog_images)

    print(f"\n## Zero-shot top-1 (score: matches with confidence > {THRESHOLD}), device={args.device}\n")
    print("| dataset | protocol | pairs | method | top-1 | mean matches same / different id | s |")
    print("|---|---|---:|---|---:|---|---:|")
    extractors = {"aliked": AlikedExtractor, "disk": DiskExtractor}
    for name in args.methods:
        extractor = extractors[name](device=args.device, progress=False)
        matcher = MatchLightGlue(
            name, collector=CollectCounts([THRESHOLD]), device=args.device, progress=False, adaptive=False
        )
        runs = [
            (
                "zebra",
                f"{args.zebra_ids} ids, query vs gallery",
                zebra_query,
                zebra_gallery,
                zebra_root,
                ZEBRA_SIZE,
            ),
            (
                "dogfaces",
                f"{args.dog_ids} ids x {args.dog_images}, leave-one-out",
                dog_subset,
                None,
                dogs_root,
                DOG_SIZE,
            ),
        ]
        for data_name, protocol, query_rows, gallery_rows, root, size in runs:
            if data_name not in args.datasets:
                continue
            start = time.perf_counter()
            query_features = extractor(dataset(root, query_rows, size))
            gallery_features = (
                query_features if gallery_rows is None else extractor(dataset(root, gallery_rows, size))
            )
            scores = matcher(query_features, gallery_features)
            gallery_labels = (query_rows if gallery_rows is None else gallery_rows).identity.to_numpy()
            if gallery_rows is None:
                scores.fill_diagonal_(torch.nan)  # leave-one-out: an image is not its own candidate
            same = torch.from_numpy(query_rows.identity.to_numpy()[:, None] == gallery_labels[None])
            valid = ~scores.isnan()
            print(
                f"| {data_name} | {protocol} | {int(valid.sum())} | {name.upper()}+LightGlue | "
                f"{top1(scores, query_rows.identity.to_numpy(), gallery_labels):.3f} | "
                f"{scores[same & valid].mean():.1f} / {scores[~same & valid].mean():.1f} | "
                f"{time.perf_counter() - start:.0f} |"
            )


def loo_subset(metadata: pd.DataFrame, ids: int, per_id: int, seed: int) -> pd.DataFrame:
    """``per_id`` images of each of ``ids`` random identities with at least that many."""
    sizes = metadata.groupby("identity").size()
    chosen = np.random.default_rng(seed).choice(sizes[sizes >= per_id].index, ids, replace=False)
    return metadata[metadata.identity.isin(chosen)].groupby("identity").head(per_id)


def modes(args, zebra: pd.DataFrame, zebra_root: Path, dogs: pd.DataFrame, dogs_root: Path) -> None:
    """Full depth vs adaptive vs adaptive+symmetric on every ordered leave-one-out pair of two subsets."""
    print(f"\n## LightGlue modes: ALIKED 256 keypoints at 256 px, leave-one-out, all ordered pairs, "
          f"device={args.device}, threads={torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}\n")
    print("| data | images | mode | pairs matched | s | pairs/s | speed-up | top-1 | mean |count - full| |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|")
    extractor = AlikedExtractor(device=args.device, progress=False)
    subsets = [("zebra", loo_subset(zebra, args.modes_ids, args.modes_per_id, 2), zebra_root),
               ("dogfaces", loo_subset(dogs, args.modes_ids, args.modes_per_id, 3), dogs_root)]
    for name, rows, root in subsets:
        features = extractor(dataset(root, rows, [256, 256]))
        n = len(features)
        pairs = torch.cartesian_prod(torch.arange(n), torch.arange(n))
        pairs = pairs[pairs[:, 0] != pairs[:, 1]]
        labels = rows.identity.to_numpy()
        runs = [("full depth (today)", {"adaptive": False}, False), ("adaptive", {"adaptive": True}, False),
                ("adaptive + symmetric", {"adaptive": True}, True)]
        for setting in args.modes_confidences:
            depth, width = map(float, setting.split(":"))
            runs.append((f"adaptive ({depth:g} / {width:g}) + symmetric",
                         {"adaptive": True, "depth_confidence": depth, "width_confidence": width}, True))
        if args.modes_bf16:
            runs.append(("adaptive + symmetric + bf16", {"adaptive": True, "bf16": True}, True))
        full_seconds = full_counts = None
        for mode, options, symmetric in runs:
            matcher = MatchLightGlue("aliked", collector=CollectCounts([THRESHOLD]), device=args.device,
                                     progress=False, **options)
            to_match, inverse = symmetric_pairs(pairs) if symmetric else (pairs, torch.arange(len(pairs)))
            start = time.perf_counter()
            counts = matcher.score_pairs(features, features, to_match)[inverse]
            sync(args.device)
            seconds = time.perf_counter() - start
            if full_seconds is None:
                full_seconds, full_counts = seconds, counts
            if mode == "adaptive":  # both directions matched: how symmetric LightGlue is
                grid = torch.full((n, n), torch.nan)
                grid[pairs[:, 0], pairs[:, 1]] = counts
                asymmetry = (grid - grid.T).abs().nan_to_num(0)
                symmetry_note = (f"{name}: |count(a,b) - count(b,a)| max {asymmetry.max():.0f}, mean "
                                 f"{asymmetry.sum() / len(pairs):.2f}, equal on "
                                 f"{float(((asymmetry == 0).sum() - n) / len(pairs)):.1%} of pairs")
            grid = torch.full((n, n), -torch.inf)
            grid[pairs[:, 0], pairs[:, 1]] = counts
            top1 = float(np.mean(labels[grid.argmax(dim=1).numpy()] == labels))
            print(f"| {name} | {n} | {mode} | {len(to_match)} | {seconds:.1f} | {len(pairs) / seconds:.2f} | "
                  f"{full_seconds / seconds:.2f}x | {top1:.3f} | {(counts - full_counts).abs().mean():.1f} |")
        print(f"\n{symmetry_note}\n")


def cache(args, zebra: pd.DataFrame, root: Path) -> None:
    """One rerank pass (``PairScorer.score`` over queries x candidates): cold, warm from disk (a new scorer, as a
    new process has it), warm from memory (the same scorer), and warm with the feature cache alone."""
    rng = np.random.default_rng(4)
    pool = zebra.iloc[rng.choice(len(zebra), args.cache_pool, replace=False)]
    gallery = dataset(root, pool, ZEBRA_SIZE)
    queries = rng.choice(args.cache_pool, args.cache_queries, replace=False)
    pairs = torch.tensor([(q, g) for q in queries for g in rng.choice(
        np.setdiff1d(np.arange(args.cache_pool), [q]), args.candidates, replace=False)])
    print(f"\n## Rerank pass, cold vs warm cache: PairScorer (ALIKED 256 keypoints + adaptive LightGlue, 256 px) "
          f"over {args.cache_queries} queries x {args.candidates} candidates among {args.cache_pool} zebra images "
          f"(leave-one-out: one dataset, {len(symmetric_pairs(pairs)[0])} pairs to match), device={args.device}, "
          f"threads={torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}\n")
    print("| pass | s | speed-up | images extracted | pairs matched |")
    print("|---|---:|---:|---:|---:|")

    def counted(network, method: str) -> None:
        """Count the images (extractor) or pairs (matcher) that really go through the network."""
        network.calls, run = 0, getattr(network, method)

        def wrapper(*inputs):
            network.calls += len(inputs[-1])
            return run(*inputs)

        setattr(network, method, wrapper)

    def scorer(folder: str) -> PairScorer:
        extractor = AlikedExtractor(device=args.device, progress=False)
        matcher = MatchLightGlue("aliked", collector=CollectCounts([THRESHOLD]), device=args.device,
                                 progress=False)
        counted(extractor, "detect")
        counted(matcher, "match")
        return PairScorer(matcher, extractor, cache_dir=folder)

    with tempfile.TemporaryDirectory() as folder:
        cold_scorer = scorer(folder)
        runs = [("cold (empty caches)", cold_scorer), ("warm from disk (new scorer: a new process)", scorer(folder)),
                ("warm from memory (same scorer)", cold_scorer)]
        timings, reference = [], None
        for label, run in runs:
            before = run.extractor.calls, run.matcher.calls
            start = time.perf_counter()
            scores = next(iter(run.score(gallery, gallery, pairs).values()))
            timings.append(time.perf_counter() - start)
            reference = scores if reference is None else reference
            assert torch.equal(scores, reference), "a warm pass changed the scores"
            print(f"| {label} | {timings[-1]:.2f} | {timings[0] / timings[-1]:.1f}x | "
                  f"{run.extractor.calls - before[0]} | {run.matcher.calls - before[1]} |")
        # features from disk, every pair matched: a warm pass before pair scores were cached
        features_only = scorer(folder)
        features_only._score_cache = lambda: None
        start = time.perf_counter()
        features_only.score(gallery, gallery, pairs)
        seconds = time.perf_counter() - start
        print(f"| warm features only (pair scores not cached) | {seconds:.2f} | {timings[0] / seconds:.1f}x | "
              f"{features_only.extractor.calls} | {features_only.matcher.calls} |")
        print(f"\nmean count {reference.mean():.1f}")


def kornia_loop(extractor, images: list[torch.Tensor]) -> None:
    """The plain per-image loop a user would write with kornia's network alone (no padding, no batching)."""
    with torch.inference_mode():
        for image in images:
            if isinstance(extractor, DiskExtractor):
                extractor.model(image[None].to(extractor.device), n=extractor.max_num_keypoints,
                                pad_if_not_divisible=True)
            else:
                extractor.model(image[None].to(extractor.device))


def extraction(args, zebra: pd.DataFrame, root: Path) -> None:
    """ALIKED and DISK seconds per image by batch size vs a plain per-image kornia loop, at two image sizes
    (same decoded images in memory, same run). The paths take turns, ``--extract-rounds`` times, and each keeps
    its fastest round: on a shared machine the least disturbed one is the closest to the truth."""
    rows = zebra.iloc[np.random.default_rng(5).choice(len(zebra), args.extract_images, replace=False)]
    print(f"\n## Extraction, s/image by batch size vs a plain kornia loop ({args.extract_images} zebra photos "
          f"decoded in memory, 256 keypoints, best of {args.extract_rounds} interleaved rounds, device={args.device}, "
          f"threads={torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f})\n")
    print("| extractor | image size | kornia loop | " + " | ".join(f"batch {b}" for b in args.extract_batches)
          + " |")
    print("|---|---|---:|" + "---:|" * len(args.extract_batches))
    for name, family in (("ALIKED", AlikedExtractor), ("DISK", DiskExtractor)):
        for size in args.extract_sizes:
            decoded = dataset(root, rows, [size, size])
            images = [decoded[i][0] for i in range(len(decoded))]
            plain = family(device=args.device, batch_size=1, progress=False, memory_cache=0)
            paths = {"kornia loop": lambda plain=plain, images=images: kornia_loop(plain, images)}
            for batch_size in args.extract_batches:
                extractor = family(device=args.device, batch_size=batch_size, progress=False, memory_cache=0)
                paths[f"batch {batch_size}"] = lambda extractor=extractor, images=images: extractor(images)
            kornia_loop(plain, images[:1])  # warm-up
            best = dict.fromkeys(paths, float("inf"))
            for _ in range(args.extract_rounds):
                for path, run in paths.items():
                    start = time.perf_counter()
                    run()
                    sync(args.device)
                    best[path] = min(best[path], (time.perf_counter() - start) / len(images))
            print(f"| {name} | {size} x {size} | " + " | ".join(f"{best[path]:.3f}" for path in paths) + " |",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--candidates", type=int, default=20)
    parser.add_argument("--pool", type=int, default=60)
    parser.add_argument("--zebra-ids", type=int, default=4)
    parser.add_argument("--zebra-queries-per-id", type=int, default=2)
    parser.add_argument("--dog-ids", type=int, default=4)
    parser.add_argument("--dog-images", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["aliked", "disk"], choices=["aliked", "disk"])
    parser.add_argument("--datasets", nargs="+", default=["zebra", "dogfaces"], choices=["zebra", "dogfaces"])
    parser.add_argument("--modes-ids", type=int, default=6)
    parser.add_argument("--modes-per-id", type=int, default=4)
    parser.add_argument("--modes-bf16", action="store_true", help="also time bf16 autocast matching")
    parser.add_argument("--modes-confidences", nargs="*", default=[], metavar="DEPTH:WIDTH",
                        help="also time adaptive + symmetric with these depth/width confidences (paper: 0.95:0.99)")
    parser.add_argument("--cache-pool", type=int, default=30)
    parser.add_argument("--cache-queries", type=int, default=10)
    parser.add_argument("--extract-images", type=int, default=8)
    parser.add_argument("--extract-batches", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--extract-sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--extract-rounds", type=int, default=2)
    parser.add_argument("--only", nargs="+", default=["speed", "accuracy", "modes", "cache", "extraction"],
                        choices=["speed", "accuracy", "modes", "cache", "extraction"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    zebra_root, dogs_root = args.data / "zebra", args.data / "dogfaces"
    zebra, dogs = pd.read_csv(zebra_root / "metadata.csv"), pd.read_csv(dogs_root / "metadata.csv")
    if "speed" in args.only:
        speed(args, zebra, zebra_root)
    if "accuracy" in args.only:
        zero_shot(args, zebra, zebra_root, dogs, dogs_root)
    if "modes" in args.only:
        modes(args, zebra, zebra_root, dogs, dogs_root)
    if "cache" in args.only:
        cache(args, zebra, zebra_root)
    if "extraction" in args.only:
        extraction(args, zebra, zebra_root)


if __name__ == "__main__":
    main()
