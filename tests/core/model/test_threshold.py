"""Summable error statistics and the thresholds read from them."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fediot.core.model import (
    BIN_WIDTH_LOG10,
    N_ERROR_BINS,
    ErrorStats,
    ModelInputError,
    error_bin_edges,
    threshold_mean_std,
    threshold_quantile,
)


def lognormal_errors(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).lognormal(mean=-2.0, sigma=1.5, size=n)


def test_merge_equals_stats_of_concatenation() -> None:
    parts = [lognormal_errors(n, seed) for seed, n in enumerate((0, 1, 17, 5000, 1234))]
    merged = ErrorStats.pool(ErrorStats.from_errors(p) for p in parts)
    direct = ErrorStats.from_errors(np.concatenate(parts))
    assert merged.n == direct.n == sum(len(p) for p in parts)
    np.testing.assert_array_equal(merged.hist, direct.hist)
    assert merged.sum == pytest.approx(direct.sum, rel=1e-12)
    assert merged.sumsq == pytest.approx(direct.sumsq, rel=1e-12)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.lists(st.floats(0, 1e9, allow_nan=False), max_size=30), max_size=5))
def test_merge_property(parts: list[list[float]]) -> None:
    merged = ErrorStats.pool(ErrorStats.from_errors(np.array(p, dtype=float)) for p in parts)
    flat = np.array([x for p in parts for x in p], dtype=float)
    direct = ErrorStats.from_errors(flat)
    assert merged.n == len(flat)
    np.testing.assert_array_equal(merged.hist, direct.hist)
    assert merged.sum == pytest.approx(direct.sum, rel=1e-9, abs=1e-300)


def test_bins_and_end_bins() -> None:
    edges = error_bin_edges()
    assert len(edges) == N_ERROR_BINS + 1
    assert edges[0] == pytest.approx(1e-8) and edges[-1] == pytest.approx(1e8)
    stats = ErrorStats.from_errors(np.array([0.0, 1e-12, 1e-8, 1.0, 1e8, 1e30]))
    assert stats.hist[0] == 3  # 0, 1e-12 (underflow) and 1e-8 (first bin's lower edge)
    assert stats.hist[-1] == 2  # 1e8 and 1e30 (overflow)
    assert stats.hist[N_ERROR_BINS // 2] == 1  # 1.0 starts the middle bin


def test_mean_std_threshold() -> None:
    errors = lognormal_errors(10_000, 1)
    stats = ErrorStats.from_errors(errors)
    assert threshold_mean_std(stats, 0.0) == pytest.approx(errors.mean(), rel=1e-12)
    assert threshold_mean_std(stats) == pytest.approx(errors.mean() + errors.std(), rel=1e-9)
    assert threshold_mean_std(stats, 3) == pytest.approx(errors.mean() + 3 * errors.std(), rel=1e-9)
    # Per device vs global: the same function on one device's stats or on the pooled stats.
    other = ErrorStats.from_errors(10 * lognormal_errors(500, 2))
    pooled = threshold_mean_std(stats + other)
    both = np.concatenate([errors, 10 * lognormal_errors(500, 2)])
    assert pooled == pytest.approx(both.mean() + both.std(), rel=1e-9)


@pytest.mark.parametrize("n", [1, 2, 999, 10_007])
@pytest.mark.parametrize("q", [0.0, 0.05, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0])
def test_quantile_within_one_bin(n: int, q: float) -> None:
    errors = lognormal_errors(n, n)
    estimate = threshold_quantile(ErrorStats.from_errors(errors), q)
    true = float(np.quantile(errors, q, method="inverted_cdf"))
    assert abs(math.log10(estimate) - math.log10(true)) <= BIN_WIDTH_LOG10 + 1e-9


def test_quantile_is_not_trivially_exact() -> None:
    # The histogram really loses information: a tight cluster is located only to its bin.
    errors = np.full(100, 0.5)
    estimate = threshold_quantile(ErrorStats.from_errors(errors), 0.5)
    assert estimate != 0.5
    assert abs(math.log10(estimate) - math.log10(0.5)) <= BIN_WIDTH_LOG10


def test_transport_round_trips() -> None:
    stats = ErrorStats.from_errors(lognormal_errors(300, 3))
    for again in (
        ErrorStats.from_arrays(stats.to_arrays()),
        ErrorStats.from_dict(json.loads(json.dumps(stats.to_dict()))),
    ):
        assert (again.n, again.sum, again.sumsq) == (stats.n, stats.sum, stats.sumsq)
        np.testing.assert_array_equal(again.hist, stats.hist)


def test_bad_inputs() -> None:
    with pytest.raises(ModelInputError, match=r"row 1 is -1\.0"):
        ErrorStats.from_errors([0.1, -1.0])
    with pytest.raises(ModelInputError, match="row 0 is nan"):
        ErrorStats.from_errors([np.nan])
    with pytest.raises(ModelInputError, match="1-D"):
        ErrorStats.from_errors(np.zeros((2, 2)))
    with pytest.raises(ModelInputError, match="no errors"):
        threshold_quantile(ErrorStats.empty(), 0.5)
    with pytest.raises(ModelInputError, match="mean is undefined"):
        threshold_mean_std(ErrorStats.empty())
    with pytest.raises(ModelInputError, match="q must be"):
        threshold_quantile(ErrorStats.from_errors([1.0]), 1.5)
    data = ErrorStats.from_errors([1.0, 2.0]).to_dict()
    with pytest.raises(ModelInputError, match="counts 2 errors but n is 3"):
        ErrorStats.from_dict({**data, "n": 3})
    with pytest.raises(ModelInputError, match="lacks key 'hist'"):
        ErrorStats.from_dict({k: v for k, v in data.items() if k != "hist"})
    with pytest.raises(ModelInputError, match="uses bins over"):
        ErrorStats.from_dict({**data, "log10_min": -6.0})
    with pytest.raises(ModelInputError, match="shape"):
        ErrorStats.from_dict({**data, "hist": [2]})


def test_share_above_reads_the_histogram_to_within_one_bin() -> None:
    errors = np.random.default_rng(4).lognormal(mean=-2.0, sigma=1.0, size=20_000)
    stats = ErrorStats.from_errors(errors)
    for threshold in (1e-3, 0.05, 0.135, 0.5, 3.0):
        exact = float((errors > threshold).mean())
        assert abs(stats.share_above(threshold) - exact) <= 0.01  # one bin holds < 1 % here
    assert stats.share_above(1e9) == 0.0
    assert stats.share_above(-1.0) == 1.0
    assert np.isnan(ErrorStats.empty().share_above(0.1))


def test_stats_of_parts_equal_each_part_alone() -> None:
    rng = np.random.default_rng(4)
    errors = np.concatenate([rng.lognormal(-3, 2, 500), [0.0, 1e-12, 1e9]])
    ends = [0, 3, 3, 250, 503]  # an empty first and third part
    parts = ErrorStats.of_parts(errors, ends)
    assert len(parts) == 5
    for part, start, stop in zip(parts, [0, *ends[:-1]], ends, strict=True):
        alone = ErrorStats.from_errors(errors[start:stop])
        assert (part.n, part.sum, part.sumsq) == (alone.n, alone.sum, alone.sumsq)
        assert np.array_equal(part.hist, alone.hist)
    assert ErrorStats.of_parts(np.zeros(0), []) == []
    with pytest.raises(ModelInputError, match="must rise to 503"):
        ErrorStats.of_parts(errors, [3, 2, 503])
    with pytest.raises(ModelInputError, match="row 1 is nan"):
        ErrorStats.of_parts([0.1, np.nan], [2])


def test_pool_equals_adding_one_by_one() -> None:
    parts = [ErrorStats.from_errors(lognormal_errors(n, seed)) for seed, n in enumerate(
        [0, 17, 300, 1, 4000])]
    one_by_one = ErrorStats.empty()
    for part in parts:
        one_by_one = one_by_one + part
    pooled = ErrorStats.pool(iter(parts))
    assert (pooled.n, pooled.sum, pooled.sumsq) == (one_by_one.n, one_by_one.sum,
                                                    one_by_one.sumsq)
    assert np.array_equal(pooled.hist, one_by_one.hist)
    total = squares = 0.0
    for part in parts:  # the plain float sums, in order
        total, squares = total + part.sum, squares + part.sumsq
    assert (pooled.sum, pooled.sumsq) == (total, squares)
    assert int(pooled.hist.sum()) == pooled.n == sum(part.n for part in parts)
    empty = ErrorStats.pool([])
    assert (empty.n, empty.sum, empty.sumsq, int(empty.hist.sum())) == (0, 0.0, 0.0, 0)
    with pytest.raises(TypeError, match="cannot pool float"):
        ErrorStats.pool([parts[1], 1.0])  # type: ignore[list-item]
