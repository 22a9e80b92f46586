"""Grouping new photos into proposed individuals at scale: seconds to build the top-k graph and to cluster it.

Random seeded 256-d embeddings (no structure: the hardest case for the merge loop, every photo ends up merged).
For each size it times, in one process:

- graph: the top-k cosine graph (:func:`similarity_graph`, chunked search, photos as queries and gallery);
- discover: average-linkage grouping at ``--threshold`` (default -1, the floor: every merge of the dendrogram
  is made, the upper bound of any threshold's cost) on that graph;
- at 0.2: the same at threshold 0.2 (random 256-d embeddings have nearest-neighbour cosines around 0.3);
- choose: :func:`choose_discovery_threshold` with random labels (N / 5 identities): the whole dendrogram and the
  AMI of every cut;
- total = graph + discover: grouping N photos from their embeddings.

    python benchmarks/bench_discovery.py                 # 5000 and 20000 photos, k=10
    python benchmarks/bench_discovery.py --sizes 5000 --k 20
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from reid_lightning.inference import choose_discovery_threshold, discover, similarity_graph


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threshold", type=float, default=-1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    print(f"{args.dim}-d random embeddings, k={args.k}, torch threads={torch.get_num_threads()}")
    print(f"{'photos':>7} {'edges':>8} {'graph s':>8} {'discover s':>10} {'groups':>7} {'at 0.2 s':>9} "
          f"{'groups':>7} {'choose s':>9} {'total s':>8}")
    for size in args.sizes:
        rng = np.random.default_rng(args.seed)
        embeddings = torch.from_numpy(rng.standard_normal((size, args.dim), dtype=np.float32))
        labels = rng.integers(0, max(1, size // 5), size)
        start = time.perf_counter()
        graph = similarity_graph(embeddings, k=args.k)
        graph_s = time.perf_counter() - start
        start = time.perf_counter()
        result = discover(graph, threshold=args.threshold)
        discover_s = time.perf_counter() - start
        start = time.perf_counter()
        typical = discover(graph, threshold=0.2)
        typical_s = time.perf_counter() - start
        start = time.perf_counter()
        choose_discovery_threshold(graph, true_labels=labels)
        choose_s = time.perf_counter() - start
        print(f"{size:>7} {graph.num_edges:>8} {graph_s:8.2f} {discover_s:10.2f} {result.num_groups:>7} "
              f"{typical_s:9.2f} {typical.num_groups:>7} {choose_s:9.2f} {graph_s + discover_s:8.2f}", flush=True)


if __name__ == "__main__":
    main()
