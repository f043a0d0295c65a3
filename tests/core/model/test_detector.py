"""The sklearn-style detector on synthetic and on real N-BaIoT rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.metrics import ClassCounts
from fediot.core.model import (
    AutoencoderDetector,
    ErrorStats,
    FeatureScaler,
    ModelInputError,
    NotFittedError,
    get_weights,
    threshold_mean_std,
)


def benign_like(rows: int, seed: int) -> np.ndarray:
    """Positive, correlated, heavy-ish features: 115 columns driven by 5 latent factors."""
    rng = np.random.default_rng(seed)
    mixing = np.random.default_rng(1000).normal(size=(5, N_FEATURES))
    latent = rng.normal(size=(rows, 5))
    log_values = 2.0 + 0.5 * (latent @ mixing) / np.sqrt(5) + 0.05 * rng.normal(size=(rows, 115))
    values: np.ndarray = np.exp(log_values)
    return values


def test_separable_data_is_flagged() -> None:
    train, opt, test = benign_like(3000, 0), benign_like(500, 1), benign_like(1000, 2)
    attack = benign_like(1000, 3) * np.exp(np.random.default_rng(4).normal(0, 1.5, size=N_FEATURES))
    detector = AutoencoderDetector(epochs=15, batch_size=64, seed=0).fit(train, opt)
    assert detector.n_features_in_ == N_FEATURES
    assert detector.train_report_ is not None and detector.opt_stats_ is not None
    assert detector.threshold_ == pytest.approx(threshold_mean_std(detector.opt_stats_, 1.0))
    assert detector.predict(attack).mean() >= 0.99
    assert detector.predict(test).mean() <= 0.15
    scores = detector.score_samples(attack)
    np.testing.assert_allclose(detector.decision_function(attack), scores - detector.threshold_)
    assert set(np.unique(detector.predict(test))) <= {0, 1}


def test_fit_is_deterministic_and_quantile_threshold() -> None:
    train = benign_like(600, 5)
    first = AutoencoderDetector(epochs=2, seed=3).fit(train)
    second = AutoencoderDetector(epochs=2, seed=3).fit(train)
    assert first.threshold_ == second.threshold_
    for a, b in zip(get_weights(first.model_), get_weights(second.model_), strict=True):
        np.testing.assert_array_equal(a, b)
    by_quantile = AutoencoderDetector(epochs=2, seed=3, threshold_quantile=0.9).fit(train)
    flagged = (by_quantile.score_samples(train) > by_quantile.threshold_).mean()
    assert 0.07 <= flagged <= 0.13  # the 0.9 quantile of the training errors (within one bin)


def test_window_vote_in_predict() -> None:
    train = benign_like(1000, 6)
    detector = AutoencoderDetector(epochs=3, seed=0, window=5).fit(train)
    rows = benign_like(40, 7)
    rows[10:30] *= 50.0  # an attack burst in the middle of benign traffic
    single = AutoencoderDetector.from_components(
        detector.scaler_, get_weights(detector.model_), detector.threshold_
    )
    raw = single.predict(rows)
    voted = detector.predict(rows)
    assert raw[10:30].all()
    assert voted[:12].sum() <= raw[:12].sum()
    assert voted[13:30].all() and not voted[:10].any() and not voted[33:].any()


def test_from_components_matches_fit() -> None:
    train = benign_like(500, 8)
    fitted = AutoencoderDetector(epochs=1).fit(train)
    served = AutoencoderDetector.from_components(
        FeatureScaler.from_arrays(fitted.scaler_.to_arrays()),
        get_weights(fitted.model_),
        fitted.threshold_,
    )
    rows = benign_like(50, 9)
    np.testing.assert_array_equal(served.score_samples(rows), fitted.score_samples(rows))
    assert served.opt_stats_ is None and served.train_report_ is None


def test_validation_at_the_door() -> None:
    detector = AutoencoderDetector(epochs=1)
    with pytest.raises(NotFittedError, match="not fitted yet"):
        detector.predict(np.zeros((2, N_FEATURES)))
    detector.fit(benign_like(100, 10))
    with pytest.raises(ModelInputError, match="114 columns; expected 115"):
        detector.score_samples(np.zeros((2, 114)))
    bad = np.zeros((2, N_FEATURES))
    bad[1, 40] = np.nan
    with pytest.raises(ModelInputError, match=f"row 1, column 40 \\({FEATURE_NAMES[40]}\\)"):
        detector.predict(bad)
    with pytest.raises(ModelInputError, match="X_opt has 3 columns; expected 115"):
        AutoencoderDetector(epochs=1).fit(benign_like(10, 0), np.zeros((4, 3)))
    with pytest.raises(ModelInputError, match="epochs must be an integer ≥ 1"):
        AutoencoderDetector(epochs=0)
    with pytest.raises(ModelInputError, match="threshold_quantile must be ≤ 1"):
        AutoencoderDetector(threshold_quantile=2.0)
    with pytest.raises(ModelInputError, match="weight array"):
        AutoencoderDetector.from_components(detector.scaler_, [np.zeros(3)] * 16, 1.0)
    assert "epochs=1" in repr(detector)


def read_rows(path: Path) -> pd.DataFrame:
    frame = pd.read_csv(path)
    assert tuple(frame.columns) == FEATURE_NAMES
    return frame


def test_real_benign_model_flags_real_attacks(nbaiot_dir: Path) -> None:
    """Trained on the first 200 real benign rows (in order), thresholded on the next 50.

    Measured (seed 0, 50 epochs, batch 32): held-out benign rows 250–298 flagged 4/49 = 0.082
    (0.04–0.08 over seeds 0–4); Ecobee Mirai UDP 299/299 = 1.000; doorbell Gafgyt UDP
    299/299 = 1.000 (both 1.000 for seeds 0–4). With N-BaIoT's window vote over 5 rows the
    held-out benign rows give 0/49 alerts and both attacks still 299/299.
    """
    benign = read_rows(nbaiot_dir / "Device_unspecified" / "benign_traffic.csv")
    mirai = read_rows(nbaiot_dir / "Ecobee_Thermostat" / "mirai_attacks" / "udp.csv")
    gafgyt = read_rows(nbaiot_dir / "Doorbell_unspecified" / "gafgyt_attacks" / "udp.csv")
    train, opt, held_out = benign.iloc[:200], benign.iloc[200:250], benign.iloc[250:]

    detector = AutoencoderDetector(epochs=50, batch_size=32, seed=0).fit(train, opt)
    counts = (
        ClassCounts.from_flags("benign", detector.predict(held_out))
        + ClassCounts.from_flags("mirai.udp", detector.predict(mirai))
        + ClassCounts.from_flags("gafgyt.udp", detector.predict(gafgyt))
    )
    assert counts.flag_rate("mirai.udp") >= 0.95
    assert counts.flag_rate("gafgyt.udp") >= 0.95
    assert counts.flag_rate("benign") <= 0.15
    # The scores separate cleanly, not just on the right side of one threshold.
    assert np.median(detector.score_samples(mirai)) > 10 * np.median(detector.score_samples(opt))
    assert counts.confusion().f1 >= 0.95
    voting = AutoencoderDetector.from_components(
        detector.scaler_, get_weights(detector.model_), detector.threshold_, window=5
    )
    assert voting.predict(held_out).mean() <= counts.flag_rate("benign")
    assert voting.predict(mirai).mean() >= 0.95 and voting.predict(gafgyt).mean() >= 0.95
    assert ErrorStats.from_errors(detector.score_samples(held_out)).n == 49
