"""Grouping new photos into proposed individuals at scale: seconds to group, and whether a big group can form.

Two measurements, each in one process:

1. Speed, random seeded 256-d embeddings (no structure: every photo ends up merged). For each size: seconds of
   :func:`group_new_photos` at ``--threshold`` (all pairs up to ``FULL_LINKAGE_MAX_PHOTOS`` photos, the top-50
   graph beyond), and of :func:`choose_discovery_threshold` with random labels (N / 5 identities: the whole
   dendrogram and the AMI of every cut).
2. Big groups: synthetic individuals with orthogonal centres and wide noise (``--noise``: within cosines about
   0.75, across below 0.3), one of them with ``--big`` photos among individuals of 2-5 photos; the cut is chosen on a
   validation set of small individuals only, as a small catalogue's validation holds. It prints how many groups
   the big individual ends in and the ARI, for all pairs and for the top-10 graph grouping used before.

    python benchmarks/bench_discovery.py                       # 5000 and 20000 photos; big groups 60 .. 2000
    python benchmarks/bench_discovery.py --sizes 5000 --big 60 500
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.metrics import adjusted_rand_score

from reid_lightning.inference import choose_discovery_threshold
from reid_lightning.runtime.grouping import FULL_LINKAGE_MAX_PHOTOS, LARGE_K, group_new_photos


def individuals(sizes: list[int], *, dim: int, noise: float, rng: np.random.Generator):
    centres = np.linalg.qr(rng.standard_normal((dim, dim)))[0][: len(sizes)]
    labels = np.repeat(np.arange(len(sizes)), sizes)
    return (centres[labels] + noise * rng.standard_normal((len(labels), dim))).astype(np.float32), labels


def speed(args) -> None:
    print(f"speed: {args.dim}-d random embeddings; all pairs up to {FULL_LINKAGE_MAX_PHOTOS} photos, "
          f"top-{LARGE_K} graph beyond")
    print(f"{'photos':>7} {'group s':>8} {'groups':>7} {'choose s':>9}")
    for size in args.sizes:
        rng = np.random.default_rng(args.seed)
        embeddings = rng.standard_normal((size, args.dim), dtype=np.float32)
        labels = rng.integers(0, max(1, size // 5), size)
        start = time.perf_counter()
        grouped = group_new_photos(embeddings, threshold=args.threshold)
        group_s = time.perf_counter() - start
        start = time.perf_counter()
        choose_discovery_threshold(embeddings, true_labels=labels)
        choose_s = time.perf_counter() - start
        print(f"{size:>7} {group_s:8.2f} {grouped.num_groups:>7} {choose_s:9.2f}", flush=True)


def big_groups(args) -> None:
    print(f"\nbig groups: one individual of B photos among {args.others} individuals of 2-5 photos "
          f"({args.big_dim}-d, noise {args.noise})")
    print(f"{'B':>6} {'photos':>7} {'rule':>10} {'cut':>7} {'pieces of B':>12} {'ARI':>6} {'seconds':>8}")
    for big in args.big:
        rng = np.random.default_rng(args.seed)
        others = rng.integers(2, 6, args.others).tolist()
        validation, identities = individuals(rng.integers(2, 6, 12).tolist(), dim=args.big_dim, noise=args.noise,
                                             rng=rng)
        photos, labels = individuals([big, *others], dim=args.big_dim, noise=args.noise, rng=rng)
        for rule, k in (("all pairs", None), ("top-10", 10)):
            cut, _ = choose_discovery_threshold(validation, true_labels=identities, k=k)
            start = time.perf_counter()
            grouped = group_new_photos(photos, threshold=cut, k=k)
            seconds = time.perf_counter() - start
            pieces = len(set(grouped.groups[labels == 0].tolist()))
            ari = adjusted_rand_score(labels, grouped.groups)
            print(f"{big:>6} {len(photos):>7} {rule:>10} {cut:7.3f} {pieces:>12} {ari:6.3f} {seconds:8.2f}",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--threshold", type=float, default=0.2,
                        help="cut of the speed runs (random 256-d photos: nearest cosines about 0.3)")
    parser.add_argument("--big", type=int, nargs="+", default=[60, 500, 2000])
    parser.add_argument("--others", type=int, default=100)
    parser.add_argument("--noise", type=float, default=0.05)
    parser.add_argument("--big-dim", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    speed(args)
    big_groups(args)


if __name__ == "__main__":
    main()
