"""The warm-up rule: which feature rows have no source history, on made-up and real rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.data.reader import read_feature_csv
from fediot.core.features.warmup import SLOWEST_HALF_LIFE, WarmupError, WarmupRule

MI = FEATURE_NAMES.index("MI_dir_L0.01_weight")
H = FEATURE_NAMES.index("H_L0.01_weight")


def rows_with(mi: list[float], h: list[float]) -> np.ndarray:
    rows = np.full((len(mi), N_FEATURES), 5.0)
    rows[:, MI], rows[:, H] = mi, h
    return rows


def test_a_row_is_warm_up_only_when_both_source_weights_lack_history() -> None:
    rows = rows_with(mi=[1.0, 1.9, 2.0, 1.0, 30.0], h=[1.0, 1.9, 1.0, 2.5, 30.0])
    assert WarmupRule().no_history(rows).tolist() == [True, True, False, False, False]
    assert WarmupRule(min_history=2.0).no_history(rows).tolist() == [
        True, True, True, True, False]
    assert not WarmupRule.off().no_history(rows).any()


def test_steady_drops_rows_in_order_and_counts_them() -> None:
    rows = rows_with(mi=[1.0, 9.0, 1.0, 8.0], h=[1.0, 9.0, 1.0, 8.0])
    kept, dropped = WarmupRule().steady(rows)
    assert dropped == 2
    np.testing.assert_array_equal(kept, rows[[1, 3]])
    steady = rows[[1, 3]]
    same, none = WarmupRule().steady(steady)
    assert none == 0 and same is steady  # nothing dropped: no copy


def test_settling_is_the_first_seconds_of_a_stream() -> None:
    t = np.array([100.0, 150.0, 199.9, 200.0, 500.0])
    assert WarmupRule().settle_seconds == SLOWEST_HALF_LIFE == 100.0
    assert WarmupRule().settling(t, first=100.0).tolist() == [True, True, True, False, False]
    assert not WarmupRule.off().settling(t, first=100.0).any()


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf"), "1", True])
def test_bad_parameters_are_refused(bad: object) -> None:
    with pytest.raises(WarmupError, match="min_history"):
        WarmupRule(min_history=bad)  # type: ignore[arg-type]
    with pytest.raises(WarmupError, match="settle_seconds"):
        WarmupRule(settle_seconds=bad)  # type: ignore[arg-type]


def test_wrong_width_is_refused() -> None:
    with pytest.raises(WarmupError, match="115"):
        WarmupRule().no_history(np.ones((3, 7)))


def test_real_benign_rows_lose_only_their_cold_start(nbaiot_dir: Path,
                                                     nbaiot_more_dir: Path) -> None:
    """In the real Danmini capture only the capture's first packet and two new sources have
    no history: 3 of 3,050 rows. The real Gafgyt UDP flood is almost all no-history rows."""
    benign = read_feature_csv(nbaiot_more_dir / "Danmini_Doorbell/benign_traffic.csv")
    mask = WarmupRule().no_history(benign)
    assert mask[0] and mask.sum() == 3
    flood = read_feature_csv(nbaiot_dir / "Doorbell_unspecified/gafgyt_attacks/udp.csv")
    assert WarmupRule().no_history(flood).mean() > 0.95
