"""Time and peak memory of the evaluation core against recognite and torchmetrics.

Every method runs in its own subprocess on the same seeded random score matrix, so peak RSS is its own. Values
are checked to agree before the timings are reported. torchmetrics' retrieval AP ignores targets whose
prediction is <= 0, so scores are uniform in (0.01, 1] (all positive) for every method.

    python benchmarks/bench_eval.py                # 1000 x 20000 (500 ids) and 1000 x 50000
    python benchmarks/bench_eval.py --sizes 200x5000
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

METHODS = ("ours", "ours+curves", "recognite", "torchmetrics")


def make_problem(num_queries: int, num_gallery: int, num_ids: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    scores = torch.rand(num_queries, num_gallery, generator=g) * 0.99 + 0.01
    gallery = torch.randint(0, num_ids, (num_gallery,), generator=g)
    query = torch.randint(0, num_ids, (num_queries,), generator=g)
    return scores, gallery, query


def prepare_method(method: str):
    """Import what ``method`` needs (outside the timed region) and return ``run(scores, gallery, query)``."""
    if method in ("ours", "ours+curves", "recognite"):
        if method == "recognite":
            from recognite.eval import pr_metrics, top_k_accuracy
        else:
            from reid_lightning.eval import pr_metrics, top_k_accuracy
        options = {"curves": method == "ours+curves"} if method != "recognite" else {}

        def run(scores, gallery, query):
            result = pr_metrics(scores, gallery, query, **options)
            top1 = top_k_accuracy(scores, gallery, query, 1)
            return {"mAP": result["mAP"].item(), "maxF1": result["maxF1"].mean().item(), "top1": top1.item()}

        return run
    if method == "torchmetrics":
        from torchmetrics.retrieval import RetrievalMAP

        def run(scores, gallery, query):
            targets = query[:, None] == gallery[None, :]
            indexes = torch.arange(len(query))[:, None].expand_as(scores)
            metric = RetrievalMAP(empty_target_action="neg")
            return {"mAP": metric(scores.flatten(), targets.flatten(), indexes=indexes.flatten()).item()}

        return run
    raise ValueError(method)


def worker(method: str, size: str, num_ids: int, threads: int) -> None:
    torch.set_num_threads(threads)
    num_queries, num_gallery = map(int, size.split("x"))
    scores, gallery, query = make_problem(num_queries, num_gallery, num_ids)
    run = prepare_method(method)
    baseline_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    values = run(scores, gallery, query)
    seconds = time.perf_counter() - start
    extra_mib = max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - baseline_kib) / 1024
    matrix_mib = scores.numel() * 4 / 2**20
    print(json.dumps({"seconds": seconds, "extra_mib": extra_mib, "matrix_mib": matrix_mib, **values}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1000x20000", "1000x50000"])
    parser.add_argument("--ids", type=int, default=500)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "SIZE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker, args.ids, args.threads)
        return

    print(f"{'size':>12} {'method':>14} {'seconds':>9} {'extra MiB':>10} {'x matrix':>8} {'speed-up':>8}  values")
    for size in args.sizes:
        rows = {}
        for method in args.methods:
            out = subprocess.run(
                [sys.executable, __file__, "--worker", method, size, "--ids", str(args.ids),
                 "--threads", str(args.threads)],
                capture_output=True, text=True, check=True,
            )
            rows[method] = json.loads(out.stdout.strip().splitlines()[-1])
        ours = rows.get("ours")
        for method, row in rows.items():
            if ours is not None:
                for key in ("mAP", "maxF1", "top1"):
                    if key in row and abs(row[key] - ours[key]) > 1e-4:
                        raise SystemExit(f"{method} {key}={row[key]} disagrees with ours={ours[key]} at {size}")
            speed_up = row["seconds"] / ours["seconds"] if ours else float("nan")
            values = " ".join(f"{k}={row[k]:.4f}" for k in ("mAP", "maxF1", "top1") if k in row)
            print(f"{size:>12} {method:>14} {row['seconds']:9.2f} {row['extra_mib']:10.0f} "
                  f"{row['extra_mib'] / row['matrix_mib']:8.2f} {speed_up:8.1f}x  {values}", flush=True)
    print("speed-up = method seconds / ours seconds; 'x matrix' = peak extra memory / score-matrix size")


if __name__ == "__main__":
    main()
