"""N-BaIoT's majority vote over consecutive rows, on hand-worked sequences."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fediot.core.metrics import MetricsInputError, window_vote


def test_window_three_by_hand() -> None:
    flags = np.array([1, 0, 1, 1, 0, 0, 0, 1, 1, 0], dtype=bool)
    # Rows 0–1 vote over the rows seen so far: [1] → 1/1 alert, [1,0] → 1/2 tie, no alert.
    # Rows 2–9, trailing 3: [1,0,1]=2 [0,1,1]=2 [1,1,0]=2 [1,0,0]=1
    #                       [0,0,0]=0 [0,0,1]=1 [0,1,1]=2 [1,1,0]=2  (≥ 2 of 3 → alert)
    expected = [1, 0, 1, 1, 1, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(window_vote(flags, 3), np.array(expected, dtype=bool))


def test_even_window_tie_is_not_an_alert() -> None:
    flags = np.array([1, 1, 0, 0, 1, 1, 1, 0])
    # trailing 4 (partial at start): [1]=1/1 [1,1]=2/2 [1,1,0]=2/3 [1,1,0,0]=2/4 tie
    # [1,0,0,1]=2/4 tie [0,0,1,1]=2/4 tie [0,1,1,1]=3/4 [1,1,1,0]=3/4
    expected = [1, 1, 1, 0, 0, 0, 1, 1]
    np.testing.assert_array_equal(window_vote(flags, 4), np.array(expected, dtype=bool))


def test_window_one_is_identity_and_long_window_is_running_majority() -> None:
    flags = np.array([0, 1, 1, 0, 1], dtype=bool)
    np.testing.assert_array_equal(window_vote(flags, 1), flags)
    # window longer than the sequence: majority of everything seen so far
    expected = [0, 0, 1, 0, 1]  # 0/1, 1/2, 2/3, 2/4, 3/5
    np.testing.assert_array_equal(window_vote(flags, 10), np.array(expected, dtype=bool))
    assert window_vote(np.array([], dtype=bool), 5).shape == (0,)


@given(st.lists(st.booleans(), max_size=60), st.integers(1, 12))
def test_matches_a_direct_loop(flags: list[bool], window: int) -> None:
    expected = [
        2 * sum(flags[max(0, i - window + 1) : i + 1]) > min(i + 1, window)
        for i in range(len(flags))
    ]
    np.testing.assert_array_equal(window_vote(np.array(flags, dtype=bool), window), expected)


def test_bad_inputs() -> None:
    with pytest.raises(MetricsInputError, match="window must be a positive integer"):
        window_vote(np.ones(3, dtype=bool), 0)
    with pytest.raises(MetricsInputError, match="1-D"):
        window_vote(np.ones((2, 2), dtype=bool), 2)
    with pytest.raises(MetricsInputError, match="0/1"):
        window_vote(np.array([0, 2]), 2)
