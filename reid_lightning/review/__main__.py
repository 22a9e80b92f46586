"""``python -m reid_lightning.review RUN_DIR``: review a predict run's answers in a local web page."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from .inputs import ReviewRun
from .session import DEFAULT_AUTO_ACCEPT, Review


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m reid_lightning.review", description=(
        "Review the answers of `train.py predict` in a web page on this machine, one animal per page: move out its "
        "photos of other animals, join the photos and groups that are this one, name the new ones. Every answer is "
        "saved at once "
        "(SQLite) and the reviewed catalogue is written as a metadata.csv that predict and fit take as they are."))
    parser.add_argument("run", help="the folder predict wrote predictions.csv to (or that predictions CSV)")
    parser.add_argument("--review_dir", help="where the review keeps its decisions and writes the catalogue "
                        "(default: RUN/review); never a folder holding photos")
    parser.add_argument("--host", default="127.0.0.1", help="address to serve on (default: this machine only)")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--reviewer", default=None, help="name saved with each decision (default: your login)")
    parser.add_argument("--auto_accept", type=float, default=DEFAULT_AUTO_ACCEPT,
                        help="pairs whose calibrated probability of one animal is at least this are joined without a "
                        "person when the review starts (above 1: never); default %(default)s")
    parser.add_argument("--export", action="store_true", help="write the catalogue and the decisions, then exit")
    parser.add_argument("--with_unsettled", action="store_true",
                        help="with --export: also the photos nobody settled, under their proposed individual")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        run = ReviewRun.load(args.run)
        folder = Path(args.review_dir) if args.review_dir else run.predictions_csv.parent / "review"
        review = Review(run, folder, auto_accept=args.auto_accept)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.export:
        path = review.write_catalogue(with_unsettled=args.with_unsettled)
        print(f"catalogue written to {path} ({review.progress()['settled']} of {review.graph.num_photos} new photos "
              f"settled); decisions in {path.with_name('decisions.csv')}")
        return 0
    import uvicorn

    from .app import create_app

    progress = review.progress()
    print(f"reviewing {progress['photos']} photos of {run.predictions_csv}: {progress['settled']} settled, "
          f"{progress['open']} questions; decisions are saved in {review.store.path}")
    print(f"review page: http://{args.host}:{args.port}/  (Ctrl-C stops; nothing is lost)", flush=True)
    uvicorn.run(create_app(review, reviewer=args.reviewer or getpass.getuser()), host=args.host, port=args.port,
                log_level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
