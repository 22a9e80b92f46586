"""Top-k search at scale: chunked torch vs FAISS flat vs FAISS IVF (time, peak memory, recall@10).

Each backend runs in its own subprocess on the same seeded random embeddings (no labels: candidates only, as in
predict or a reranking shortlist). Peak extra memory is the process's peak RSS minus its RSS once the embeddings
exist. Recall@10 is measured against the torch backend's exact top-10.

    python benchmarks/bench_scale.py                       # 10000 queries x 1000000 gallery, 256-d, k=10
    python benchmarks/bench_scale.py --size 1000x100000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

BACKENDS = ("torch", "faiss", "faiss-ivf")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(backend: str, num_queries: int, num_gallery: int, dim: int, k: int) -> None:
    from reid_lightning.retrieval import search

    g = torch.Generator().manual_seed(0)
    query, gallery = torch.randn(num_queries, dim, generator=g), torch.randn(num_gallery, dim, generator=g)
    labels = torch.zeros(num_gallery, dtype=torch.long)
    search(query[:10], gallery[:1000], k=k, gallery_labels=labels[:1000], backend=backend)  # imports, first calls
    baseline = rss_mib()
    start = time.perf_counter()
    results = search(query, gallery, k=k, gallery_labels=labels, backend=backend)
    seconds = time.perf_counter() - start
    torch.save(results.candidate_indices, f"/tmp/bench_scale_{backend}.pt")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "extra_mib": peak - baseline}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="10000x1000000", help="QUERIESxGALLERY")
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    num_queries, num_gallery = map(int, args.size.split("x"))
    if args.child:
        child(args.child, num_queries, num_gallery, args.dim, args.k)
        return
    rows = {}
    for backend in BACKENDS:
        done = subprocess.run([sys.executable, __file__, "--child", backend, "--size", args.size, "--dim",
                               str(args.dim), "--k", str(args.k)], capture_output=True, text=True, check=True)
        rows[backend] = json.loads(done.stdout.strip().splitlines()[-1])
        print(backend, rows[backend], flush=True)
    exact = torch.load("/tmp/bench_scale_torch.pt")
    print(f"{num_queries} queries x {num_gallery} gallery, {args.dim}-d, k={args.k}; gallery embeddings "
          f"{num_gallery * args.dim * 4 / 2**20:.0f} MiB; dense (Q, G) float32 would be "
          f"{num_queries * num_gallery * 4 / 2**20:.0f} MiB")
    print(f"{'backend':>10} {'seconds':>8} {'extra MiB':>10} {'vs faiss':>9} {'recall@k':>9}")
    for backend, row in rows.items():
        found = torch.load(f"/tmp/bench_scale_{backend}.pt")
        recall = sum(len(set(a) & set(b)) for a, b in zip(found.tolist(), exact.tolist())) / exact.numel()
        print(f"{backend:>10} {row['seconds']:8.1f} {row['extra_mib']:10.0f} "
              f"{row['seconds'] / rows['faiss']['seconds']:9.2f} {recall:9.4f}")


if __name__ == "__main__":
    main()
