"""ROC and AUC from score histograms, against exact rank computations."""

from __future__ import annotations

import numpy as np
import pytest

from fediot.core.metrics import (
    MetricsInputError,
    roc_auc_from_histograms,
    roc_curve_from_histograms,
)
from fediot.core.model import ErrorStats


def exact_auc(benign: np.ndarray, attack: np.ndarray) -> float:
    """P(attack > benign) + ½·P(tie), over all pairs."""
    greater = (attack[:, None] > benign[None, :]).mean()
    ties = (attack[:, None] == benign[None, :]).mean()
    return float(greater + 0.5 * ties)


@pytest.mark.parametrize("seed", range(6))
def test_auc_within_the_stated_bound(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shift = rng.uniform(0.0, 2.0)
    benign = rng.lognormal(-2.0, 1.0, size=int(rng.integers(200, 1500)))
    attack = rng.lognormal(-2.0 + shift, 1.2, size=int(rng.integers(200, 1500)))
    auc, bound = roc_auc_from_histograms(
        ErrorStats.from_errors(benign).hist, ErrorStats.from_errors(attack).hist
    )
    truth = exact_auc(benign, attack)
    assert abs(auc - truth) <= bound + 1e-12
    assert 0 < bound < 0.05  # narrow bins → small bound on overlapping data


def test_bound_is_exact_when_all_pairs_share_a_bin() -> None:
    # One bin, attack always above benign: truth = 1, histogram says ½, bound = ½.
    auc, bound = roc_auc_from_histograms([5], [7])
    assert (auc, bound) == (0.5, 0.5)
    assert abs(auc - 1.0) <= bound


def test_separated_and_reversed() -> None:
    assert roc_auc_from_histograms([4, 0, 0], [0, 0, 9]) == (1.0, 0.0)
    assert roc_auc_from_histograms([0, 3], [2, 0]) == (0.0, 0.0)


def test_curve_area_equals_auc_and_ends() -> None:
    rng = np.random.default_rng(7)
    benign = rng.integers(0, 50, size=40)
    attack = rng.integers(0, 50, size=40)
    fpr, tpr = roc_curve_from_histograms(benign, attack)
    assert len(fpr) == len(tpr) == 41
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert (np.diff(fpr) >= 0).all() and (np.diff(tpr) >= 0).all()
    auc, _ = roc_auc_from_histograms(benign, attack)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))
    assert area == pytest.approx(auc, abs=1e-12)


def test_pooled_histograms_give_the_pooled_auc() -> None:
    rng = np.random.default_rng(3)
    parts = [(rng.lognormal(-2, 1, 300), rng.lognormal(0, 1, 200)) for _ in range(3)]
    benign = sum((ErrorStats.from_errors(b) for b, _ in parts), ErrorStats.empty())
    attack = sum((ErrorStats.from_errors(a) for _, a in parts), ErrorStats.empty())
    auc, bound = roc_auc_from_histograms(benign.hist, attack.hist)
    truth = exact_auc(np.concatenate([b for b, _ in parts]), np.concatenate([a for _, a in parts]))
    assert abs(auc - truth) <= bound


def test_bad_histograms() -> None:
    with pytest.raises(MetricsInputError, match="3 bins but attack_hist has 2"):
        roc_auc_from_histograms([1, 2, 3], [1, 2])
    with pytest.raises(MetricsInputError, match="benign_hist is empty"):
        roc_auc_from_histograms([0, 0], [1, 2])
    with pytest.raises(MetricsInputError, match="non-negative"):
        roc_curve_from_histograms([1, -1], [1, 2])
