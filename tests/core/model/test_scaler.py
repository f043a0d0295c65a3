"""Signed-log1p standardisation and its summable statistics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.model import (
    DEFAULT_STD_FLOOR,
    FeatureScaler,
    ModelInputError,
    ScalerStats,
    check_features,
    signed_log1p,
)


def heavy_tailed(rng: np.random.Generator, rows: int, width: int = N_FEATURES) -> np.ndarray:
    """N-BaIoT-like values: magnitudes from 1e-3 to 1e17, some negative."""
    magnitude = 10.0 ** rng.uniform(-3, 17, size=(rows, width))
    sign = np.where(rng.random((rows, width)) < 0.2, -1.0, 1.0)
    return magnitude * sign


def test_signed_log1p_values() -> None:
    x = np.array([[-np.e + 1, 0.0, np.e - 1, 5.67e17]])
    np.testing.assert_allclose(signed_log1p(x), [[-1.0, 0.0, 1.0, np.log1p(5.67e17)]])
    assert signed_log1p(x)[0, 3] == pytest.approx(40.879, abs=1e-3)


def test_pooled_stats_equal_centralised() -> None:
    rng = np.random.default_rng(0)
    shards = [heavy_tailed(rng, rows) for rows in (1, 57, 1000, 333)]
    pooled = ScalerStats.pool(ScalerStats.from_data(shard) for shard in shards)
    everything = np.concatenate(shards)
    central = signed_log1p(everything)

    assert pooled.n == len(everything)
    np.testing.assert_allclose(pooled.mean, central.mean(axis=0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(pooled.std, central.std(axis=0), rtol=1e-9)
    scaler = FeatureScaler.from_stats(pooled)
    np.testing.assert_allclose(
        scaler.transform(everything),
        ((central - central.mean(axis=0)) / central.std(axis=0)).astype(np.float32),
        rtol=1e-5,
        atol=1e-5,
    )
    # The order of addition does not matter beyond rounding.
    reverse = ScalerStats.pool(ScalerStats.from_data(shard) for shard in reversed(shards))
    np.testing.assert_allclose(reverse.sum, pooled.sum, rtol=1e-13)


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=40), min_size=1, max_size=6), st.integers(0, 99))
def test_pooling_is_exact_in_counts_and_close_in_sums(sizes: list[int], seed: int) -> None:
    rng = np.random.default_rng(seed)
    shards = [rng.normal(size=(rows, 7)) * 1e6 for rows in sizes]
    pooled = ScalerStats.pool((ScalerStats.from_data(s) for s in shards), n_features=7)
    everything = signed_log1p(np.concatenate(shards))
    assert pooled.n == sum(sizes)
    np.testing.assert_allclose(pooled.sum, everything.sum(axis=0), rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(pooled.sumsq, (everything**2).sum(axis=0), rtol=1e-12)


def test_constant_column_uses_the_floor() -> None:
    X = np.ones((10, 3))
    X[:, 1] = np.arange(10)
    scaler = FeatureScaler.fit(X)
    assert scaler.scale_[0] == DEFAULT_STD_FLOOR
    assert scaler.scale_[1] > 0.5
    out = scaler.transform(X)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], 0.0)


def test_transport_round_trips() -> None:
    stats = ScalerStats.from_data(heavy_tailed(np.random.default_rng(1), 20))
    again = ScalerStats.from_arrays(stats.to_arrays())
    assert again.n == stats.n
    np.testing.assert_array_equal(again.sum, stats.sum)
    from_json = ScalerStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_array_equal(from_json.sumsq, stats.sumsq)
    scaler = FeatureScaler.from_stats(stats)
    copy = FeatureScaler.from_arrays(scaler.to_arrays())
    np.testing.assert_array_equal(copy.scale_, scaler.scale_)


def test_stats_are_read_only() -> None:
    stats = ScalerStats.from_data(np.ones((3, 4)))
    with pytest.raises(ValueError, match="read-only"):
        stats.sum[0] = 5.0


def test_bad_inputs_name_the_problem() -> None:
    X = np.zeros((4, N_FEATURES))
    X[2, 3] = np.nan
    with pytest.raises(ModelInputError, match=r"row 2, column 3 \(MI_dir_L3_weight\)"):
        check_features(X)
    X[2, 3] = np.inf
    with pytest.raises(ModelInputError, match="non-finite value \\(inf\\)"):
        ScalerStats.from_data(X)
    scaler = FeatureScaler.fit(np.random.default_rng(0).normal(size=(5, N_FEATURES)))
    with pytest.raises(ModelInputError, match="114 columns; expected 115"):
        scaler.transform(np.zeros((2, 114)))
    with pytest.raises(ModelInputError, match="2-D"):
        scaler.transform(np.zeros(N_FEATURES))
    with pytest.raises(ModelInputError, match="not a numeric matrix"):
        check_features([["a", "b"]])
    with pytest.raises(ModelInputError, match="zero rows"):
        FeatureScaler.from_stats(ScalerStats.empty())
    with pytest.raises(ModelInputError, match="3 and 4 features"):
        ScalerStats.empty(3) + ScalerStats.empty(4)
    with pytest.raises(ModelInputError, match="lacks key 'sumsq'"):
        ScalerStats.from_dict({"n": 1, "sum": [0.0]})
    with pytest.raises(ModelInputError, match="positive in every column"):
        FeatureScaler(np.zeros(2), np.array([1.0, 0.0]))
    assert issubclass(ModelInputError, FediotError)


def test_huge_but_finite_values_pass_the_fast_finite_check() -> None:
    X = np.full((3, 2), 1e308)
    assert check_features(X).shape == (3, 2)


def test_dataframe_columns_must_follow_the_catalogue() -> None:
    frame = pd.DataFrame(np.zeros((2, N_FEATURES)), columns=list(FEATURE_NAMES))
    assert check_features(frame).shape == (2, N_FEATURES)
    swapped = list(FEATURE_NAMES)
    swapped[0], swapped[1] = swapped[1], swapped[0]
    with pytest.raises(ModelInputError, match="column 0 is 'MI_dir_L5_mean'"):
        check_features(pd.DataFrame(np.zeros((2, N_FEATURES)), columns=swapped))


def test_real_rows_transform_to_moderate_values(nbaiot_dir: Path) -> None:
    benign = pd.read_csv(nbaiot_dir / "Device_unspecified" / "benign_traffic.csv")
    assert benign.to_numpy().max() > 1e17  # the heavy tail is really there
    scaler = FeatureScaler.fit(benign)
    z = scaler.transform(benign)
    assert np.isfinite(z).all()
    # Standardised on its own rows: every column has mean 0 and std ≤ 1 (< 1 when floored).
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-4)
    assert (z.std(axis=0) <= 1.0 + 1e-4).all()
