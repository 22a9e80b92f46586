"""Seconds of one RetrievalReport on the demo's test set (synthetic individuals, 64 px): each panel, then the
PNG + report.html writer. Random embeddings stand in for a model (the report's cost does not depend on them).

    python benchmarks/bench_report.py                       # demo data in a temporary folder, 3 repeats
    python benchmarks/bench_report.py --root /tmp/synthetic --repeats 5

The cost of the report inside `make demo` is measured by running the demo with the callback (it logs
``val/report_seconds`` and ``test/report_seconds``) and without it; see README, "Watching runs on W&B".
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from reid_lightning.data import ReIDDataModule
from reid_lightning.report import ReportInputs, ReportSettings, write_report_files
from reid_lightning.report.panels import PANELS, Report
from reid_lightning.retrieval import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="synthetic data folder (default: a temporary one)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        root = args.root or str(Path(temp) / "synthetic")
        datamodule = ReIDDataModule(synthetic_dir=root, synthetic=True, image_size=64, test_ratio=0.3, val_ratio=0.15)
        datamodule.setup("test")
        query, gallery = datamodule.eval_datasets("test")
        torch.manual_seed(0)
        results = search(torch.randn(len(query), 512), torch.randn(len(gallery), 512), k=100,
                         query_labels=torch.as_tensor(query.labels), gallery_labels=torch.as_tensor(gallery.labels))
        inputs, settings = ReportInputs(results, query, gallery), ReportSettings()
        seconds: dict[str, list[float]] = {}
        for repeat in range(args.repeats):
            report = Report()
            for name, panel in PANELS.items():
                start = time.perf_counter()
                for item_name, item in panel(inputs, settings).items():
                    report.add(item_name, item)
                seconds.setdefault(name, []).append(time.perf_counter() - start)
            start = time.perf_counter()
            write_report_files(Path(temp) / f"report-{repeat}", report, title="benchmark")
            seconds.setdefault("write PNG + html", []).append(time.perf_counter() - start)
        print(f"{len(query)} queries x {len(gallery)} gallery images, median of {args.repeats} (seconds)")
        for name, values in seconds.items():
            print(f"{name:<18} {statistics.median(values):6.3f}")
        print(f"{'total':<18} {sum(statistics.median(v) for v in seconds.values()):6.3f}")


if __name__ == "__main__":
    main()
