"""Batched pair matching: the shared driver of every pairwise matcher."""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import torch
from tqdm.auto import tqdm

from ...features.extractor import default_device
from ...interrupt import check, interruptible
from .collectors import CollectCounts, Collector
from .matches import PairMatches

Scores = torch.Tensor | dict[Hashable, torch.Tensor]


def _unwrap(scores: dict[Hashable, torch.Tensor]) -> Scores:
    return next(iter(scores.values())) if len(scores) == 1 else scores


def settings(thing: Any) -> str:
    """A stable description of a collector's simple public settings, e.g. ``CollectCounts(thresholds=(0.5,))``,
    followed by those of the objects it holds (e.g. a RANSAC); functions and tensors are left out."""
    simple = (bool, int, float, str, type(None))

    def is_simple(value: Any) -> bool:
        return isinstance(value, simple) or (isinstance(value, (tuple, list)) and all(map(is_simple, value)))

    attributes = {key: value for key, value in vars(thing).items() if not key.startswith("_")}
    values = ", ".join(f"{key}={value!r}" for key, value in sorted(attributes.items()) if is_simple(value))
    held = [settings(value) for _, value in sorted(attributes.items())
            if hasattr(value, "__dict__") and not isinstance(value, (type, torch.Tensor))
            and (isinstance(value, torch.nn.Module) or not callable(value))]
    return " ".join([f"{type(thing).__qualname__}({values})", *held])


def check_pairs(pairs: Any, num_query: int, num_database: int) -> torch.Tensor:
    """``pairs`` as a ``(P, 2)`` long CPU tensor of ``(query index, database index)`` rows, range-checked."""
    pairs = torch.as_tensor(pairs).cpu()
    if pairs.ndim != 2 or pairs.shape[1] != 2 or (pairs.numel() and pairs.is_floating_point()):
        raise ValueError(
            f"pairs must be a (P, 2) integer tensor of (query, database) indices, got {tuple(pairs.shape)}."
        )
    pairs = pairs.long()
    for column, size, name in ((0, num_query, "query"), (1, num_database, "database")):
        bad = (pairs[:, column] < 0) | (pairs[:, column] >= size)
        if bad.any():
            row = int(torch.nonzero(bad)[0])
            raise IndexError(
                f"pairs row {row} has {name} index {int(pairs[row, column])}, outside [0, {size})."
            )
    return pairs


class MatchPairs:
    """Scores image pairs in batches: ``matcher(query, database)`` is the full ``(Q, G)`` score matrix.

    Subclasses implement :meth:`prepare` (once per call: per-image work such as moving features to the device
    or running a backbone, so each image is processed once whatever the number of its pairs) and :meth:`match`
    (one batch of pairs → :class:`PairMatches`). The collector turns matches into scores; float32 throughout.

    Args:
        collector: turns matches into scores; defaults to ``CollectCounts(thresholds=(0.5,))``.
        batch_size: pairs per forward pass.
        device: device of the matcher; None picks CUDA when available.
        progress: show a tqdm progress bar.
    """

    def __init__(
        self,
        collector: Collector | None = None,
        batch_size: int = 128,
        device: str | torch.device | None = None,
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}.")
        self.collector = collector if collector is not None else CollectCounts()
        self.batch_size = batch_size
        self.device = default_device(device)
        self.progress = progress

    @property
    def display_name(self) -> str:
        """The matcher in progress bars, e.g. ``LightGlue`` for ``MatchLightGlue`` (``<phase>: LightGlue pairs``)."""
        return type(self).__name__.removeprefix("Match") or type(self).__name__

    def config(self) -> dict[str, Any]:
        """Everything besides the inputs and the collector that changes the scores (subclasses add their
        settings; weights by fingerprint); not the batch size or the progress bar."""
        return {"device": self.device.type}

    @property
    def config_key(self) -> str:
        """Class, :meth:`config` and collector, e.g. ``MatchDescriptors|device=cpu|ratio_threshold=0.9|
        CollectCounts(thresholds=(0.5,))``: what the pair score cache is keyed by."""
        parts = [f"{key}={value!r}" for key, value in sorted(self.config().items())]
        return "|".join([type(self).__qualname__, *parts, settings(self.collector)])

    def prepare(self, query: Any, database: Any, pairs: torch.Tensor) -> Any:
        """Per-image work shared by all pairs; the result is passed to :meth:`match`."""
        raise NotImplementedError

    def match(self, prepared: Any, pairs: torch.Tensor) -> PairMatches:
        """Matches of one batch of pairs ``(B, 2)``."""
        raise NotImplementedError

    def _each_batch(self, query: Any, database: Any, pairs: torch.Tensor,
                    consume: Callable[[PairMatches], None]) -> None:
        """Match checked, non-empty ``pairs`` batch by batch, handing each batch's matches to ``consume``.

        SIGTERM/SIGINT stop it between batches (:mod:`reid_lightning.interrupt`), after ``consume`` returned."""
        with interruptible(f"{self.display_name} pairs") as title:
            prepared = self.prepare(query, database, pairs)
            with torch.inference_mode():
                chunks = pairs.split(self.batch_size)
                for chunk in tqdm(chunks, desc=title, disable=not self.progress, leave=False):
                    check()
                    consume(self.match(prepared, chunk))

    def _score(self, query: Any, database: Any, pairs: torch.Tensor) -> dict[Hashable, torch.Tensor]:
        """Scores of checked ``pairs``, one ``(P,)`` tensor per collector output."""
        if not len(pairs):
            return self.collector(PairMatches.empty())
        scores: dict[Hashable, list[torch.Tensor]] = {}

        def collect(matches: PairMatches) -> None:
            for name, value in self.collector(matches).items():
                scores.setdefault(name, []).append(value.float().cpu())

        self._each_batch(query, database, pairs, collect)
        return {name: torch.cat(values) for name, values in scores.items()}

    def pair_matches(self, query: Any, database: Any, pairs: Any) -> list[PairMatches]:
        """The matches themselves (before the collector) of the given pairs: one unpadded :class:`PairMatches`
        per ``pairs`` row, on the CPU. Meant for a few pairs (pictures), as every match is kept."""
        pairs = check_pairs(pairs, len(query), len(database))
        matches: list[PairMatches] = []
        if len(pairs):
            self._each_batch(query, database, pairs, lambda batch: matches.extend(batch.per_pair()))
        return matches

    def score_pairs(self, query: Any, database: Any, pairs: Any) -> Scores:
        """Scores of the given pairs only: ``(P,)`` per collector output (a dict when there are several)."""
        return _unwrap(self._score(query, database, check_pairs(pairs, len(query), len(database))))

    def __call__(self, query: Any, database: Any, pairs: Any | None = None) -> Scores:
        """``(Q, G)`` float32 scores per collector output; with ``pairs``, the entries not scored are NaN."""
        num_query, num_database = len(query), len(database)
        if pairs is None:
            pairs = torch.cartesian_prod(torch.arange(num_query), torch.arange(num_database)).view(-1, 2)
        pairs = check_pairs(pairs, num_query, num_database)
        grids = {}
        for name, values in self._score(query, database, pairs).items():
            grid = torch.full((num_query, num_database), torch.nan)
            grid[pairs[:, 0], pairs[:, 1]] = values
            grids[name] = grid
        return _unwrap(grids)
