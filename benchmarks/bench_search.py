"""One validation epoch's scoring step: ``search`` (chunked top-k + streamed metrics) against the previous path.

The previous path (kept here only as the reference) scored query chunks, concatenated them into the dense
``(Q, G)`` matrix, updated the metrics per chunk and then sorted every full row to build the candidates. Both run
in their own subprocess on the same seeded random embeddings; peak extra memory is the process's peak RSS minus
its RSS once the embeddings exist, reported as a fraction of the dense float32 ``(Q, G)`` matrix. Candidates and
metrics are checked equal before timings are printed.

    python benchmarks/bench_search.py                      # 2000 queries x 200000 gallery, 512-d, 100 candidates
    python benchmarks/bench_search.py --size 500x20000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

METHODS = ("search", "concatenate+sort")


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def make_problem(num_queries: int, num_gallery: int, dim: int, num_ids: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    query = torch.randn(num_queries, dim, generator=g)
    gallery = torch.randn(num_gallery, dim, generator=g)
    return query, gallery, torch.randint(0, num_ids, (num_queries,), generator=g), torch.randint(
        0, num_ids, (num_gallery,), generator=g)


def run_search(query, gallery, query_labels, gallery_labels, k):
    from reid_lightning.retrieval import search

    results = search(query, gallery, k=k, query_labels=query_labels, gallery_labels=gallery_labels)
    return results.candidate_indices, results.metrics()


def run_previous(query, gallery, query_labels, gallery_labels, k):
    from reid_lightning.eval.labels import chunk_rows
    from reid_lightning.eval.scores import pairwise_scores
    from reid_lightning.metrics import RetrievalMetrics

    metrics = RetrievalMetrics(top_k=(1, 5), sync_on_compute=False)
    blocks = []
    for rows in chunk_rows(len(query), len(gallery), 1024 * len(gallery)):
        block = pairwise_scores(query[rows], gallery, "cosine")
        metrics.update(block, gallery_labels, query_labels[rows])
        blocks.append(block)
    scores = torch.cat(blocks)
    _, indices = torch.sort(scores, dim=1, descending=True, stable=True)
    return indices[:, :k], {name: value.item() for name, value in metrics.compute().items()}


def child(method: str, size: tuple[int, int, int], k: int) -> None:
    torch.set_num_threads(2)
    run = run_search if method == "search" else run_previous
    warm = make_problem(50, 2000, size[2], 100, seed=1)
    run(*warm, k)  # imports and first-call costs outside the timed region
    problem = make_problem(*size, num_ids=max(2, size[1] // 20))
    baseline = rss_mib()
    start = time.perf_counter()
    indices, metrics = run(*problem, k)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    torch.save(indices, f"/tmp/bench_search_{method.replace('+', '_')}.pt")
    print(json.dumps({"seconds": seconds, "extra_mib": peak - baseline, "metrics": metrics}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="2000x200000", help="QUERIESxGALLERY")
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    num_queries, num_gallery = map(int, args.size.split("x"))
    size = (num_queries, num_gallery, args.dim)
    if args.child:
        child(args.child, size, args.k)
        return
    dense_mib = num_queries * num_gallery * 4 / 2**20
    rows = {}
    for method in METHODS:
        done = subprocess.run([sys.executable, __file__, "--child", method, "--size", args.size, "--dim",
                               str(args.dim), "--k", str(args.k)], capture_output=True, text=True, check=True)
        rows[method] = json.loads(done.stdout.strip().splitlines()[-1])
    new, old = (torch.load(f"/tmp/bench_search_{m.replace('+', '_')}.pt") for m in METHODS)
    # cosine scores are rounded differently (norm division vs normalised copies): near-ties may swap
    same_rows = (new == old).all(dim=1).float().mean().item()
    for name in ("top1", "top5", "mAP", "maxF1"):
        a, b = rows["search"]["metrics"][name], rows["concatenate+sort"]["metrics"][name]
        assert abs(a - b) < 1e-6, (name, a, b)
    print(f"{num_queries} queries x {num_gallery} gallery, {args.dim}-d, k={args.k}; dense (Q, G) float32 = "
          f"{dense_mib:.0f} MiB; {torch.get_num_threads()} threads; identical candidate lists: {same_rows:.3f}")
    print(f"{'method':>18} {'seconds':>8} {'extra MiB':>10} {'x dense':>8} {'time ratio':>10}")
    reference = rows["concatenate+sort"]["seconds"]
    for method, row in rows.items():
        print(f"{method:>18} {row['seconds']:8.2f} {row['extra_mib']:10.0f} {row['extra_mib'] / dense_mib:8.3f} "
              f"{row['seconds'] / reference:10.2f}")
    print("metrics:", {k: round(v, 4) for k, v in rows["search"]["metrics"].items()})


if __name__ == "__main__":
    main()
