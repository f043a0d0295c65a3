"""Per-device splits: disjoint, in time order, covering the benign rows; attacks test-only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from nbaiot_fixtures import fixture_counts, fixture_rows, write_uci_tree

from fediot.core.catalog import ATTACK_CLASSES, BENIGN
from fediot.core.data import DEFAULT_FRACTIONS, DataError, NBaIoTSource, open_dataset, split_device
from fediot.core.data.splits import benign_bounds, check_fractions


@pytest.fixture
def source(tmp_path: Path) -> NBaIoTSource:
    counts = fixture_counts([1, 3])
    counts[(1, BENIGN)] = 300
    counts[(1, "mirai.udp")] = 250
    return open_dataset(write_uci_tree(tmp_path / "uci", fixture_rows(counts)))


def test_benign_blocks_are_disjoint_ordered_and_cover(source: NBaIoTSource) -> None:
    split = split_device(source, 1)
    benign = source.load(1, BENIGN)
    blocks = [split.train_rows, split.opt_rows, split.test_benign_rows]

    assert [len(rows) for rows in blocks] == [100, 100, 100]
    joined = np.concatenate(blocks)
    np.testing.assert_array_equal(joined, np.arange(benign.shape[0]))  # covers, in order
    assert len(set(joined.tolist())) == len(joined)  # disjoint
    assert split.train_rows.max() < split.opt_rows.min()  # time order: train, opt, test
    assert split.opt_rows.max() < split.test_benign_rows.min()
    np.testing.assert_array_equal(split.train, benign[split.train_rows])
    np.testing.assert_array_equal(split.opt, benign[split.opt_rows])
    np.testing.assert_array_equal(split.test_benign, benign[split.test_benign_rows])


def test_attacks_are_test_only_and_complete_without_a_cap(source: NBaIoTSource) -> None:
    split = split_device(source, 1)
    assert list(split.test_attacks) == list(ATTACK_CLASSES)
    for traffic_class, matrix in split.test_attacks.items():
        np.testing.assert_array_equal(matrix, source.load(1, traffic_class))
        np.testing.assert_array_equal(
            split.test_attack_rows[traffic_class], np.arange(matrix.shape[0])
        )
    assert [name for name, _ in split.test_sets()] == [BENIGN, *ATTACK_CLASSES]


def test_device_without_mirai_has_only_gafgyt_attacks(source: NBaIoTSource) -> None:
    split = split_device(source, 3)
    assert all(name.startswith("gafgyt.") for name in split.test_attacks)
    assert len(split.test_attacks) == 5


def test_attack_cap_is_a_seeded_subset_in_time_order(source: NBaIoTSource) -> None:
    split = split_device(source, 1, attack_cap=40, seed=7)
    full = source.load(1, "mirai.udp")
    rows = split.test_attack_rows["mirai.udp"]
    assert len(rows) == 40
    assert np.all(np.diff(rows) > 0)  # time order, no repeats
    np.testing.assert_array_equal(split.test_attacks["mirai.udp"], full[rows])
    # Smaller classes keep every row.
    small = split.test_attack_rows["gafgyt.combo"]
    np.testing.assert_array_equal(small, np.arange(source.row_count(1, "gafgyt.combo")))

    again = split_device(source, 1, attack_cap=40, seed=7)
    np.testing.assert_array_equal(again.test_attack_rows["mirai.udp"], rows)
    other_seed = split_device(source, 1, attack_cap=40, seed=8)
    assert not np.array_equal(other_seed.test_attack_rows["mirai.udp"], rows)
    # The benign split does not depend on the attack cap.
    np.testing.assert_array_equal(other_seed.train_rows, split.train_rows)


def test_split_blocks_are_read_only(source: NBaIoTSource) -> None:
    split = split_device(source, 1, attack_cap=5)
    for array in (
        split.train,
        split.opt,
        split.test_benign,
        split.train_rows,
        split.test_attacks["mirai.udp"],
        split.test_attack_rows["mirai.udp"],
    ):
        assert not array.flags.writeable


def test_custom_fractions(source: NBaIoTSource) -> None:
    split = split_device(source, 1, fractions=(0.5, 0.25, 0.25))
    assert (len(split.train), len(split.opt), len(split.test_benign)) == (150, 75, 75)


@pytest.mark.parametrize(
    ("fractions", "message"),
    [
        ((0.5, 0.5), "expected 3"),
        ((0.5, 0.5, 0.0), "test fraction is 0.0, must be positive"),
        ((-0.1, 0.6, 0.5), "train fraction is -0.1"),
        ((0.5, 0.3, 0.3), "must sum to 1"),
        ((float("nan"), 0.5, 0.5), "train fraction is nan"),
    ],
)
def test_bad_fractions_are_rejected(
    source: NBaIoTSource, fractions: tuple[float, ...], message: str
) -> None:
    with pytest.raises(DataError, match=message):
        split_device(source, 1, fractions=fractions)


def test_bad_requests_are_rejected(source: NBaIoTSource) -> None:
    with pytest.raises(DataError, match="attack_cap is 0"):
        split_device(source, 1, attack_cap=0)
    with pytest.raises(DataError, match="seed is -1"):
        split_device(source, 1, seed=-1)
    with pytest.raises(DataError, match="no N-BaIoT device 10"):
        split_device(source, 10)
    with pytest.raises(DataError, match="no 'benign' file for device 2"):
        split_device(source, 2)


def test_too_few_benign_rows(tmp_path: Path) -> None:
    tiny = open_dataset(write_uci_tree(tmp_path, fixture_rows({(1, BENIGN): 2})))
    with pytest.raises(DataError, match=r"benign_traffic\.csv: 2 benign rows cannot be split"):
        split_device(tiny, 1)


@given(
    n_rows=st.integers(min_value=3, max_value=10**7),
    train=st.floats(min_value=0.01, max_value=0.98),
    opt_share=st.floats(min_value=0.01, max_value=0.99),
)
def test_bounds_always_give_three_nonempty_ordered_blocks(
    n_rows: int, train: float, opt_share: float
) -> None:
    opt = (1 - train) * opt_share
    fractions = (train, opt, 1 - train - opt)
    a, b = benign_bounds(n_rows, fractions)
    assert 0 < a < b < n_rows
    # Each block is within one row of its exact share (unless forced up to one row).
    for size, fraction in zip((a, b - a, n_rows - b), fractions, strict=True):
        assert abs(size - n_rows * fraction) <= 2 or size == 1


def test_default_fractions_are_thirds() -> None:
    assert check_fractions(DEFAULT_FRACTIONS) == pytest.approx((1 / 3, 1 / 3, 1 / 3))
    assert benign_bounds(3) == (1, 2)
    assert benign_bounds(299) == (99, 199)
