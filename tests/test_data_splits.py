"""Split strategies and identity label codes (in-memory metadata, no image files needed)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from reid_lightning.data import (
    UNKNOWN,
    contiguous_classes,
    encode_identities,
    split_by_column,
    split_metadata,
)

# images per identity: covers singletons, pairs and larger identities
SIZES = {"a": 1, "b": 2, "c": 4, "d": 7, "e": 10, "f": 10, "g": 3, "h": 5, "i": 6, "j": 8}
NUM_UNKNOWN = 6


def make_metadata(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    identities = [name for name, n in SIZES.items() for _ in range(n)] + [UNKNOWN] * NUM_UNKNOWN
    order = rng.permutation(len(identities))  # interleave identities like a real export
    identities = [identities[i] for i in order]
    dates = pd.Timestamp("2021-01-01") + pd.to_timedelta(rng.permutation(len(identities)), unit="D")
    return pd.DataFrame({
        "image_id": [f"img{i:03d}" for i in range(len(identities))],
        "identity": identities,
        "path": [f"{i}.jpg" for i in range(len(identities))],
        "date": dates,
    })


def allowed_counts(n: int, ratio: float) -> set[int]:
    """Held-out counts the documented rule may give an identity of n images: n * ratio rounded either way,
    leaving at least one image."""
    return {min(n - 1, int(np.floor(n * ratio))), min(n - 1, int(np.ceil(n * ratio)))}


def assert_closed_counts(splits: dict[str, pd.DataFrame], name: str, n: int) -> None:
    train, val, test = (int((splits[s]["identity"] == name).sum()) for s in ("train", "val", "test"))
    assert train + val + test == n and train >= 1, name
    assert test in allowed_counts(n, 0.3), name
    assert val in allowed_counts(n - test, 0.1 / 0.7), name


def identities(frame: pd.DataFrame) -> set[str]:
    return set(frame["identity"]) - {UNKNOWN}


def assert_partition(df: pd.DataFrame, splits: dict[str, pd.DataFrame]) -> None:
    ids = [set(splits[name]["image_id"]) for name in ("train", "val", "test")]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(df["image_id"])
    for frame in splits.values():  # rows are the caller's rows, index kept
        pd.testing.assert_frame_equal(frame, df.loc[frame.index])


@pytest.mark.parametrize("strategy", ["closed", "open", "disjoint", "time"])
def test_every_strategy_partitions_images_and_keeps_unknown_out_of_training(strategy):
    df = make_metadata()
    original = df.copy()
    splits = split_metadata(df, strategy, seed=3)
    pd.testing.assert_frame_equal(df, original)  # caller's frame untouched
    assert_partition(df, splits)
    assert UNKNOWN not in set(splits["train"]["identity"])
    # unknown rows spread val:test = 0.1:0.3 -> round(6 * 0.25) = 2 in val
    assert (splits["val"]["identity"] == UNKNOWN).sum() == 2
    assert (splits["test"]["identity"] == UNKNOWN).sum() == NUM_UNKNOWN - 2


def test_closed_split_follows_per_identity_ratio():
    df = make_metadata()
    splits = split_metadata(df, "closed", test_ratio=0.3, val_ratio=0.1, seed=1)
    for name, n in SIZES.items():
        assert_closed_counts(splits, name, n)
    assert identities(splits["test"]) <= identities(splits["train"])
    assert identities(splits["val"]) <= identities(splits["train"])


def test_closed_split_rounds_each_identity_at_random():
    """Over seeds, the split code holds out floor(n * ratio) or one more, the latter with probability equal to
    the fraction (hand-computed below), and never an identity's last image."""
    df = make_metadata()
    held = {name: [] for name in SIZES}
    for seed in range(200):
        test = split_metadata(df, "closed", test_ratio=0.3, val_ratio=0.0, seed=seed)["test"]
        for name in SIZES:
            held[name].append(int((test["identity"] == name).sum()))
    assert set(held["a"]) == {0}  # 1 image: always kept for training
    assert set(held["e"]) == set(held["f"]) == {3}  # 10 x 0.3 = 3 exactly
    assert set(held["b"]) == {0, 1} and abs(np.mean(held["b"]) - 0.6) < 0.1  # 2 x 0.3 = 0.6
    assert set(held["d"]) == {2, 3} and abs(np.mean(held["d"]) - 2.1) < 0.1  # 7 x 0.3 = 2.1


def test_closed_split_keeps_overall_shares_with_small_identities():
    """Random rounding: 3-image identities still give ~30 % test and ~10 % validation images overall."""
    df = pd.DataFrame({"image_id": range(600), "identity": np.repeat([f"n{i}" for i in range(200)], 3)})
    df["path"] = df["image_id"].astype(str) + ".jpg"
    splits = split_metadata(df, "closed", test_ratio=0.3, val_ratio=0.1, seed=0)
    assert abs(len(splits["test"]) / 600 - 0.3) < 0.03
    assert abs(len(splits["val"]) / 600 - 0.1) < 0.03


def test_open_split_has_test_only_identities_and_closed_rest():
    df = make_metadata()
    splits = split_metadata(df, "open", open_ratio=0.2, val_ratio=0.1, seed=2)
    train, val, test = (identities(splits[s]) for s in ("train", "val", "test"))
    test_only = test - train
    assert len(test_only) == 2  # round(10 identities * 0.2)
    for name in test_only:  # an open identity is entirely in the test set
        assert (splits["test"]["identity"] == name).sum() == SIZES[name]
    for name in test - test_only:  # the rest follows the closed rule
        assert (splits["test"]["identity"] == name).sum() in allowed_counts(SIZES[name], 0.3)
    val_only = val - train
    assert val_only and not (val_only & test)  # validation opens identities that are not in the test set


def test_disjoint_split_separates_identities_near_the_ratio():
    df = make_metadata()
    splits = split_metadata(df, "disjoint", test_ratio=0.3, val_ratio=0.1, seed=0)
    train, val, test = (identities(splits[s]) for s in ("train", "val", "test"))
    assert not (train & test) and not (train & val) and not (val & test)
    known = df[df["identity"] != UNKNOWN]
    test_share = (splits["test"]["identity"] != UNKNOWN).sum() / len(known)
    assert abs(test_share - 0.3) <= max(SIZES.values()) / len(known)


def test_time_split_puts_latest_images_last():
    df = make_metadata()
    splits = split_metadata(df, "time", seed=0)
    for name, n in SIZES.items():
        assert_closed_counts(splits, name, n)
        dates = [splits[s].loc[splits[s]["identity"] == name, "date"] for s in ("train", "val", "test")]
        if len(dates[1]):
            assert dates[0].max() < dates[1].min()
        if len(dates[2]):
            assert max(dates[0].max(), dates[1].max() if len(dates[1]) else dates[0].max()) < dates[2].min()


def test_time_split_needs_dates():
    df = make_metadata().drop(columns="date")
    with pytest.raises(ValueError, match="'date' column"):
        split_metadata(df, "time")
    df = make_metadata()
    df.loc[4, "date"] = pd.NaT
    with pytest.raises(ValueError, match=r"column 'date' is empty in rows \[4\]"):
        split_metadata(df, "time")


def test_column_split_uses_and_validates_the_column():
    df = make_metadata()
    values = np.array(["train", "Val", "test "])[np.arange(len(df)) % 3]
    df["split"] = values
    df.loc[df["identity"] == UNKNOWN, "split"] = "test"
    splits = split_metadata(df, "column")
    assert_partition(df, splits)
    normalised = df["split"].str.strip().str.lower()
    for name in ("train", "val", "test"):
        assert list(splits[name].index) == list(df.index[normalised == name])

    df.loc[5, "split"] = "training"
    with pytest.raises(ValueError, match=r"rows \[5\] have \['training'\]"):
        split_by_column(df)
    df.loc[5, "split"] = "train"
    row = df.index[df["identity"] == UNKNOWN][0]
    df.loc[row, "split"] = "train"
    with pytest.raises(ValueError, match=rf"rows \[{row}\] have identity 'unknown'"):
        split_metadata(df, "column")


@pytest.mark.parametrize("strategy", ["closed", "open", "disjoint", "time"])
def test_splits_are_deterministic_with_seed(strategy):
    df = make_metadata()
    first, again = split_metadata(df, strategy, seed=7), split_metadata(df, strategy, seed=7)
    for name in ("train", "val", "test"):
        pd.testing.assert_frame_equal(first[name], again[name])
    assigned = [
        tuple(sorted(split_metadata(df, strategy, seed=seed)["test"].index)) for seed in range(5)
    ]
    assert len(set(assigned)) > 1


def test_zero_val_ratio_gives_empty_validation():
    splits = split_metadata(make_metadata(), "closed", val_ratio=0.0)
    assert splits["val"].empty
    assert (splits["test"]["identity"] == UNKNOWN).sum() == NUM_UNKNOWN


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"strategy": "random"}, "unknown split strategy 'random'"),
        ({"test_ratio": 0.7, "val_ratio": 0.3}, "sum to less than 1"),
        ({"test_ratio": -0.1}, "test_ratio=-0.1"),
        ({"open_ratio": 1.0}, "open_ratio=1.0"),
    ],
)
def test_invalid_split_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        split_metadata(make_metadata(), **kwargs)


def test_encode_identities_sorted_codes_and_unique_negative_unknowns():
    codes, names = encode_identities(["b", UNKNOWN, "a", "b", UNKNOWN, "c"])
    assert codes.tolist() == [1, -1, 0, 1, -2, 2]
    assert names == {0: "a", 1: "b", 2: "c", -1: UNKNOWN, -2: UNKNOWN}


def test_contiguous_classes_maps_codes_to_class_index():
    class_index, class_codes = contiguous_classes(np.array([5, 2, 5, 9]))
    assert class_index.tolist() == [1, 0, 1, 2]
    assert class_codes.tolist() == [2, 5, 9]
    assert (class_codes[class_index] == [5, 2, 5, 9]).all()
    with pytest.raises(ValueError, match=r"rows \[1\] are 'unknown'"):
        contiguous_classes(np.array([0, -1, 2]))


def test_val_unseen_identities_are_never_trained_on_nor_tested():
    identities = [f"id{i:02d}" for i in range(20) for _ in range(6)]
    df = pd.DataFrame({"image_id": [f"im{i}" for i in range(120)], "identity": identities,
                       "path": [f"{i}.jpg" for i in range(120)]})
    plain = split_metadata(df, "closed", test_ratio=0.3, val_ratio=0.1, seed=1)
    split = split_metadata(df, "closed", test_ratio=0.3, val_ratio=0.1, seed=1, val_unseen_ratio=0.2)
    unseen = set(split["val"]["identity"]) - set(split["train"]["identity"])
    assert len(unseen) == 4  # round(0.2 * 20)
    assert not unseen & set(split["test"]["identity"])  # the test split keeps every identity it had
    assert not set(plain["val"]["identity"]) - set(plain["train"]["identity"])  # none without the option
    for name in unseen:  # all 6 images of an unseen identity are validation images
        assert (split["val"]["identity"] == name).sum() == 6
    assert sorted(pd.concat(split.values()).index) == list(range(120))
