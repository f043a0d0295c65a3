"""ROC curve and AUC from two score histograms over the same bins (higher score = more anomalous).

Devices report only histogram counts of their scores (e.g. ``ErrorStats.hist`` of benign and of
attack rows); the counts add up across devices and these functions turn the pooled counts into a
ROC curve and an AUC with a guaranteed error bound.

Binning error: with ``p_b`` and ``q_b`` the benign and attack shares in bin ``b``, pairs in
different bins are ordered exactly; only pairs that share a bin are unknown. Counting each of
those as a half (a tie) gives ``AUC = Σ_b q_b·(Σ_{c<b} p_c + p_b/2)``, and the exact rank AUC (ties
counted as half) differs from it by at most ``0.5·Σ_b p_b·q_b``, which is returned alongside.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fediot.core.metrics.errors import MetricsInputError


def _shares(benign_hist: npt.ArrayLike, attack_hist: npt.ArrayLike) -> tuple[
    npt.NDArray[np.float64], npt.NDArray[np.float64]
]:
    arrays = []
    for name, hist in (("benign_hist", benign_hist), ("attack_hist", attack_hist)):
        try:
            counts = np.asarray(hist, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise MetricsInputError(f"{name} is not numeric: {exc}") from exc
        if counts.ndim != 1 or len(counts) == 0:
            raise MetricsInputError(
                f"{name} must be a non-empty 1-D array; got shape {counts.shape}"
            )
        if not np.isfinite(counts).all() or (counts < 0).any():
            raise MetricsInputError(f"{name} must hold finite, non-negative counts")
        total = counts.sum()
        if total == 0:
            raise MetricsInputError(f"{name} is empty (no rows); the ROC is undefined")
        arrays.append(counts / total)
    benign, attack = arrays
    if benign.shape != attack.shape:
        raise MetricsInputError(
            f"benign_hist has {len(benign)} bins but attack_hist has {len(attack)}"
        )
    return benign, attack


def roc_auc_from_histograms(
    benign_hist: npt.ArrayLike, attack_hist: npt.ArrayLike
) -> tuple[float, float]:
    """``(auc, max_binning_error)`` from per-bin counts in ascending score order.

    ``auc`` treats pairs within one bin as ties (half); the exact AUC of the underlying scores
    lies within ``auc ± max_binning_error`` where ``max_binning_error = 0.5·Σ_b p_b·q_b``.
    """
    benign, attack = _shares(benign_hist, attack_hist)
    benign_below = np.cumsum(benign) - benign
    auc = float(np.dot(attack, benign_below + 0.5 * benign))
    bound = float(0.5 * np.dot(benign, attack))
    return min(max(auc, 0.0), 1.0), bound


def roc_curve_from_histograms(
    benign_hist: npt.ArrayLike, attack_hist: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """``(fpr, tpr)``: one point per bin edge, from (0, 0) to (1, 1).

    Point ``i`` flags the top ``i`` bins (threshold at the lower edge of bin ``n_bins − i``);
    both arrays are non-decreasing. The trapezoid area under them equals the ``auc`` of
    :func:`roc_auc_from_histograms`.
    """
    benign, attack = _shares(benign_hist, attack_hist)
    fpr = np.concatenate(([0.0], np.cumsum(benign[::-1])))
    tpr = np.concatenate(([0.0], np.cumsum(attack[::-1])))
    # Remove float drift so the curve ends exactly at (1, 1).
    fpr /= fpr[-1]
    tpr /= tpr[-1]
    return fpr, tpr
