"""Train / validation / test splits of re-identification metadata.

Every strategy is a function ``(known rows, ratio, rng) -> held-out mask (N,)``; :func:`split_metadata`
applies it twice: once to hold out the test set from all rows, then to carve the validation set out of what
is left, with the same rule. ``test_ratio`` and ``val_ratio`` are fractions of all images. For ``open``,
validation-only identities are drawn among the identities without test images, so every closed test identity
keeps its training images.

Rows whose identity is ``"unknown"`` are never trained on: they are spread over validation and test (in
proportion ``val_ratio : test_ratio``), where they act as queries without any positive in the gallery and as
gallery distractors. Their negative unique label codes (see :mod:`.labels`) make sure they never count as a
positive of anything, not even of another unknown row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import numpy as np
import pandas as pd

from .labels import UNKNOWN, is_unknown
from .metadata import MAX_REPORTED_ROWS

SPLIT_STRATEGIES = ("closed", "open", "disjoint", "time", "column")
SPLIT_NAMES = ("train", "val", "test")

HeldOutRule = Callable[[pd.DataFrame, float, np.random.Generator], np.ndarray]


def _rank_within_identity(identity: np.ndarray) -> np.ndarray:
    """Position of each row among the rows of its identity, in the given order."""
    return pd.Series(identity).groupby(identity, sort=False).cumcount().to_numpy()


def _held_out_count(identity: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Per row, how many images its identity holds out: ``n * ratio`` randomly rounded, at most ``n - 1``.

    Rounding up with probability equal to the fraction keeps the overall share at ``ratio`` even when most
    identities have only a few images (rounding to nearest would hold out none of a 3-image identity at 0.1).
    """
    _, group, size = np.unique(identity, return_inverse=True, return_counts=True)
    count = np.floor(size * ratio + rng.random(len(size))).astype(np.int64)
    return np.minimum(size - 1, count)[group.reshape(-1)]


def split_closed(df: pd.DataFrame, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out about ``n * ratio`` random images of every identity, keeping at least one to train on.

    Identities with a single image stay entirely in training, so every held-out identity is also trained on.
    """
    identity = df["identity"].to_numpy()
    order = rng.permutation(len(df))
    held = np.zeros(len(df), dtype=bool)
    held[order] = _rank_within_identity(identity[order]) < _held_out_count(identity[order], ratio, rng)
    return held


def split_open(
    df: pd.DataFrame,
    ratio: float,
    rng: np.random.Generator,
    open_ratio: float,
    keep_closed: Collection[str] = (),
) -> np.ndarray:
    """Hold out all images of ``round(open_ratio * identities)`` random identities, closed-split the rest.

    Identities in ``keep_closed`` (e.g. those already in the test set) are never held out entirely.
    """
    identity = df["identity"].to_numpy()
    names = np.unique(identity)
    num_open = min(len(names) - 1, int(np.floor(len(names) * open_ratio + 0.5)))
    candidates = np.setdiff1d(names, np.asarray(list(keep_closed), dtype=names.dtype))
    open_names = rng.choice(candidates, size=min(max(num_open, 0), len(candidates)), replace=False)
    held = np.isin(identity, open_names)
    held[~held] = split_closed(df[~held], ratio, rng)
    return held


def split_disjoint(df: pd.DataFrame, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out whole random identities whose images add up as close as possible to ``ratio`` of all rows.

    At least one identity is held out and at least one is kept.
    """
    identity = df["identity"].to_numpy()
    names, counts = np.unique(identity, return_counts=True)
    if len(names) < 2:
        raise ValueError(f"split 'disjoint' needs at least 2 identities, got {len(names)}")
    order = rng.permutation(len(names))
    cumulative = np.cumsum(counts[order])[:-1]
    num_held = int(np.argmin(np.abs(cumulative - ratio * len(df)))) + 1
    return np.isin(identity, names[order[:num_held]])


def split_time(df: pd.DataFrame, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Hold out the latest ``n * ratio`` (randomly rounded) images of every identity by ``date``.

    Images taken at the same time are ordered at random.
    """
    if "date" not in df.columns:
        raise ValueError("split 'time' needs a 'date' column in the metadata")
    dates = pd.to_datetime(df["date"])
    missing = np.flatnonzero(dates.isna().to_numpy())
    if len(missing):
        raise ValueError(
            f"split 'time' needs a date for every image; column 'date' is empty in rows "
            f"{df.index[missing[:MAX_REPORTED_ROWS]].tolist()} (of {len(missing)} rows)"
        )
    identity = df["identity"].to_numpy()
    order = np.lexsort((rng.random(len(df)), dates.to_numpy(), identity))
    newest_first = order[::-1]
    held = np.zeros(len(df), dtype=bool)
    held[newest_first] = _rank_within_identity(identity[newest_first]) < _held_out_count(
        identity[newest_first], ratio, rng
    )
    return held


def split_by_column(df: pd.DataFrame, column: str = "split") -> dict[str, pd.DataFrame]:
    """Use the split given in ``column`` (values ``train``, ``val``, ``test``)."""
    if column not in df.columns:
        raise ValueError(f"split 'column' needs a '{column}' column in the metadata (values train/val/test)")
    values = df[column].astype(str).str.strip().str.lower()
    bad = np.flatnonzero(~values.isin(SPLIT_NAMES).to_numpy() | df[column].isna().to_numpy())
    if len(bad):
        shown = df[column].iloc[bad[:MAX_REPORTED_ROWS]].tolist()
        raise ValueError(
            f"column '{column}' must be one of {list(SPLIT_NAMES)}; rows "
            f"{df.index[bad[:MAX_REPORTED_ROWS]].tolist()} have {shown}"
        )
    unknown_train = np.flatnonzero(is_unknown(df["identity"]) & (values == "train").to_numpy())
    if len(unknown_train):
        raise ValueError(
            f"rows {df.index[unknown_train[:MAX_REPORTED_ROWS]].tolist()} have identity '{UNKNOWN}' and "
            f"{column} 'train'; unknown animals cannot be trained on, mark them 'val' or 'test'"
        )
    return {name: df[(values == name).to_numpy()] for name in SPLIT_NAMES}


def check_split_arguments(strategy: str, test_ratio: float, val_ratio: float, open_ratio: float,
                          val_unseen_ratio: float = 0.0) -> None:
    """Raise a ValueError naming the argument when a split setting is invalid."""
    if not 0 <= val_unseen_ratio < 1:
        raise ValueError(f"val_unseen_ratio={val_unseen_ratio} must be in [0, 1)")
    if strategy not in SPLIT_STRATEGIES:
        raise ValueError(f"unknown split strategy {strategy!r}; choose one of {list(SPLIT_STRATEGIES)}")
    if not (0 <= test_ratio < 1 and 0 <= val_ratio < 1 and test_ratio + val_ratio < 1):
        raise ValueError(
            f"test_ratio={test_ratio} and val_ratio={val_ratio} must be in [0, 1) and sum to less than 1"
        )
    if not 0 <= open_ratio < 1:
        raise ValueError(f"open_ratio={open_ratio} must be in [0, 1)")


def split_metadata(
    df: pd.DataFrame,
    strategy: str = "closed",
    *,
    test_ratio: float = 0.3,
    val_ratio: float = 0.1,
    open_ratio: float = 0.2,
    seed: int = 0,
    val_unseen_ratio: float = 0.0,
) -> dict[str, pd.DataFrame]:
    """Split validated metadata into ``{"train", "val", "test"}`` DataFrames.

    Args:
        df: metadata as returned by :func:`load_metadata`.
        strategy: ``closed`` (per identity, every held-out identity is also trained on), ``open`` (like
            closed, plus ``open_ratio`` of the identities only in the held-out split), ``disjoint`` (held-out
            and training identities disjoint), ``time`` (per identity, the latest images held out) or
            ``column`` (the ``split`` column).
        test_ratio: fraction of the images held out for testing.
        val_ratio: fraction of the images carved out of the rest for validation, by the same rule.
        open_ratio: fraction of the identities seen only in the held-out split (``open`` only).
        seed: seed of every random choice; equal seeds give equal splits.
        val_unseen_ratio: fraction of the identities kept out of training altogether: all their images go to
            validation, where they are new individuals the model never trained on (for choosing the open-set
            threshold and the discovery cut); they are set aside before the test split is drawn.

    Returns:
        Three DataFrames that keep ``df``'s index (row positions after :func:`load_metadata`).
    """
    check_split_arguments(strategy, test_ratio, val_ratio, open_ratio, val_unseen_ratio)
    if strategy == "column":
        return split_by_column(df)
    rng = np.random.default_rng(seed)
    unknown_rows = is_unknown(df["identity"])
    known = df[~unknown_rows]
    unseen = _unseen(known, val_unseen_ratio, rng) if val_unseen_ratio > 0 else np.zeros(len(known), dtype=bool)
    known, unseen = known[~unseen], known[unseen]
    test_rule = _held_out_rule(strategy, open_ratio)
    test_mask = test_rule(known, test_ratio, rng) if test_ratio > 0 else np.zeros(len(known), dtype=bool)
    rest = known[~test_mask]
    _check_held_out(strategy, known, test_mask, rest, test_ratio, val_ratio, open_ratio)
    # identities held out for testing keep their training images when validation is carved out
    val_rule = _held_out_rule(strategy, open_ratio, keep_closed=known["identity"][test_mask].unique())
    val_share = val_ratio / (1 - test_ratio)
    val_mask = val_rule(rest, val_share, rng) if val_ratio > 0 else np.zeros(len(rest), dtype=bool)

    unknown = df[unknown_rows]
    unknown_val_share = val_ratio / (val_ratio + test_ratio) if val_ratio + test_ratio > 0 else 0.0
    num_unknown_val = int(np.floor(len(unknown) * unknown_val_share + 0.5))
    unknown_to_val = np.zeros(len(unknown), dtype=bool)
    unknown_to_val[rng.permutation(len(unknown))[:num_unknown_val]] = True
    return {
        "train": rest[~val_mask],
        "val": pd.concat([rest[val_mask], unseen, unknown[unknown_to_val]]).sort_index(),
        "test": pd.concat([known[test_mask], unknown[~unknown_to_val]]).sort_index(),
    }


def _unseen(rows: pd.DataFrame, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """Rows of ``round(ratio * identities)`` random identities (at least one, and one kept for the rest)."""
    names = np.unique(rows["identity"].to_numpy())
    count = min(len(names) - 1, max(1, int(np.floor(len(names) * ratio + 0.5))))
    return np.isin(rows["identity"].to_numpy(), rng.choice(names, size=max(count, 0), replace=False))


def _check_held_out(
    strategy: str, known: pd.DataFrame, test_mask: np.ndarray, rest: pd.DataFrame, test_ratio: float,
    val_ratio: float, open_ratio: float,
) -> None:
    """Refuse splits that would silently not be what ``strategy`` promises."""
    num_identities = known["identity"].nunique()
    if strategy == "open" and test_ratio > 0 and open_ratio > 0:
        open_names = set(known["identity"][test_mask]) - set(rest["identity"])
        if not open_names:
            raise ValueError(
                f"split 'open': with {num_identities} identities and open_ratio={open_ratio}, no identity is "
                f"held out for testing only (round({num_identities} x {open_ratio}) = "
                f"{int(np.floor(num_identities * open_ratio + 0.5))}, and one must stay for training), so the "
                "split would be closed; raise open_ratio, add identities, or use split='closed'"
            )
    if strategy == "disjoint" and val_ratio > 0 and rest["identity"].nunique() < 2:
        raise ValueError(
            f"split 'disjoint': {num_identities} identities, {rest['identity'].nunique()} left after holding "
            "out the test identities, but validation needs another identity disjoint from training; "
            "use val_ratio=0 or at least 3 identities"
        )


def _held_out_rule(strategy: str, open_ratio: float, keep_closed: Collection[str] = ()) -> HeldOutRule:
    if strategy == "open":
        return lambda rows, ratio, rng: split_open(rows, ratio, rng, open_ratio, keep_closed=keep_closed)
    return {"closed": split_closed, "disjoint": split_disjoint, "time": split_time}[strategy]
