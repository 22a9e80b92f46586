"""How many decisions a person needs to turn predict's answers into a right catalogue, by a simulated reviewer.

The reviewer answers the review page's questions (the same queue and propagation: ``reid_lightning.review.Review``)
from the true identities, optionally wrong at ``--error_rate``. Printed: the ARI of the catalogue (every new photo
under its individual now: settled or, when nobody settled it yet, as proposed), its count error and the photos and
groups judged so far (a decision answers one page of them) against the number of decisions, then the line
``decisions_for_ari95=N photos=M naive=K`` (naive: one decision per photo against its top-1 answer).

    python benchmarks/bench_review.py --predictions RUN/predictions.csv --truth truth.csv [--error_rate 0.03]

``--truth``: CSV with ``path,identity`` of every predicted photo, paths as in ``predictions.csv``; known animals
under their gallery names. ``--truth_from_metadata DATA/metadata.csv`` makes it from a data set's metadata.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from tqdm import tqdm

from reid_lightning.review import Review, ReviewRun, SimulatedReviewer
from reid_lightning.review.session import DEFAULT_AUTO_ACCEPT


def truth_of(run: ReviewRun, truth_csv: Path) -> np.ndarray:
    """(N,) the true identity of every predicted photo; a one-line error when the CSV does not cover them."""
    if not truth_csv.is_file():
        raise SystemExit(f"error: --truth '{truth_csv}' does not exist")
    truth = pd.read_csv(truth_csv, dtype=str, keep_default_na=False)
    if not {"path", "identity"} <= set(truth.columns):
        raise SystemExit(f"error: --truth '{truth_csv}' needs columns path,identity; found {list(truth.columns)}")
    identity = dict(zip(truth["path"], truth["identity"], strict=True))
    paths = run.predictions["path"].tolist()
    missing = [p for p in paths if p not in identity]
    if missing:
        raise SystemExit(f"error: --truth '{truth_csv}' covers {len(paths) - len(missing)} of the {len(paths)} photos "
                         f"of {run.predictions_csv} (first missing: '{missing[0]}'); give every photo's identity, "
                         "paths as in predictions.csv")
    return np.array([identity[p] for p in paths], dtype=object)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--predictions", required=True, type=Path)
    parser.add_argument("--truth", type=Path)
    parser.add_argument("--truth_from_metadata", type=Path, help="a metadata.csv (path,identity) to take the truth from")
    parser.add_argument("--error_rate", type=float, default=0.0)
    parser.add_argument("--auto_accept", type=float, default=DEFAULT_AUTO_ACCEPT)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max_decisions", type=int, default=None, help="stop after this many (default: naive)")
    parser.add_argument("--every", type=int, default=25, help="print the curve every this many decisions")
    args = parser.parse_args()
    if (args.truth is None) == (args.truth_from_metadata is None):
        raise SystemExit("error: give --truth or --truth_from_metadata")
    try:
        run = ReviewRun.load(args.predictions)
    except (FileNotFoundError, ValueError) as error:
        raise SystemExit(f"error: {error}") from None
    truth = truth_of(run, args.truth or args.truth_from_metadata)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        review = Review(run, folder, auto_accept=args.auto_accept)
        reviewer = SimulatedReviewer(truth, error_rate=args.error_rate, seed=args.seed)
        naive, individuals = len(truth), len(set(truth))
        curve = []

        def measure(decisions: int) -> None:
            partition = review.partition()
            curve.append((decisions, adjusted_rand_score(truth, partition), len(set(partition)) - individuals,
                          int(review.graph.settled.sum()), reviewer.judgements))

        measure(0)
        progress = review.progress()
        print(f"{naive} photos of {individuals} animals; {progress['automatic']} automatic decisions "
              f"(calibrated P(same) >= {args.auto_accept}); reviewer error rate {args.error_rate}")
        bar = tqdm(total=naive, desc="simulated review", unit="decision", file=sys.stderr)

        def after(made: int) -> None:
            bar.update(1)
            measure(made)

        made = reviewer.review(review, max_decisions=args.max_decisions or naive, on_decision=after)
        bar.close()
        review.close()
    print(f"{'decisions':>9} {'ARI':>6} {'count error':>11} {'settled':>7} {'judged':>7}")
    for decisions, ari, error, settled, judged in curve:
        if decisions % args.every == 0 or decisions == made:
            print(f"{decisions:>9} {ari:>6.3f} {error:>+11d} {settled:>7} {judged:>7}")
    reached = next((d for d, ari, *_ in curve if ari >= 0.95), None)
    print(f"{'queue empty' if not review.tasks() else 'stopped'} after {made} decisions; "
          f"{time.perf_counter() - started:.0f} s; judged: photos and groups looked at (a decision judges a page)")
    print(f"decisions_for_ari95={reached if reached is not None else 'not_reached'} photos={naive} naive={naive}")


if __name__ == "__main__":
    main()
