"""A callback for the multi-process tests: every rank writes the metrics it logged to its own JSON file."""

import json
import os
from pathlib import Path

from lightning.pytorch.callbacks import Callback

from reid_lightning.similarity.pairwise import MatchDescriptors


class DumpRankMetrics(Callback):
    """Writes ``callback_metrics`` of this rank to ``$RANK_METRICS_DIR/<stage>-rank<r>.json`` after each stage."""

    def _dump(self, trainer, stage: str) -> None:
        folder = Path(os.environ["RANK_METRICS_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        values = {name: float(value) for name, value in trainer.callback_metrics.items()}
        (folder / f"{stage}-rank{trainer.global_rank}.json").write_text(json.dumps(values))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._dump(trainer, "validate")

    def on_test_end(self, trainer, pl_module) -> None:
        self._dump(trainer, "test")


class CountingMatchDescriptors(MatchDescriptors):
    """SIFT mutual-nearest-neighbour matching that appends the number of pairs it matches, one line per call, to
    ``$RANK_METRICS_DIR/pairs-<process id>.txt``."""

    def score_pairs(self, query, database, pairs):
        folder = Path(os.environ["RANK_METRICS_DIR"])
        folder.mkdir(parents=True, exist_ok=True)
        with open(folder / f"pairs-{os.getpid()}.txt", "a") as file:
            file.write(f"{len(pairs)}\n")
        return super().score_pairs(query, database, pairs)
