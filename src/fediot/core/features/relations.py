"""Structural relations every N-BaIoT feature row obeys: a check for data of unknown origin.

They follow from the definitions of the statistics (see :mod:`.extractor`) and hold in the
real N-BaIoT rows; a file that breaks them was not made by an AfterImage extractor, or was
scaled or corrupted on the way.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import FEATURE_NAMES, LAMBDA_LABELS, STATS_2D, STREAMS

REL_TOL = 1e-2
"""Relative slack for relations between columns: the public files print small values with as
few as three significant digits (``4.59E-06`` for a std² of 4.5904e-06)."""


PCC_SLACK = 0.05
"""How far |pcc| may pass 1. Kitsune's covariance pairs each residual with the other
direction's last (decayed) one rather than a simultaneous one, so the Cauchy–Schwarz bound is not
exact; real rows stay well inside it (max 0.775 in the shared files, 0.47 on the real capture)."""


def _col(stream: str, label: str, stat: str) -> int:
    return FEATURE_NAMES.index(f"{stream}_L{label}_{stat}")


def relation_violations(rows: npt.NDArray[np.floating], max_report: int = 10) -> list[str]:
    """Human-readable descriptions of broken relations (empty when ``rows`` are consistent).

    Checked: every value finite; weights > 0 and not decreasing from λ=5 to λ=0.01 (a slower
    decay keeps more weight); variances, standard deviations, magnitudes and radii ≥ 0; in 2-D
    blocks magnitude ≥ |mean| and radius ≥ std² (the other direction only adds); where the other
    direction is silent (magnitude = |mean|), radius = std² and covariance = pcc = 0; |pcc| ≤ 1
    (within :data:`PCC_SLACK`).
    """
    x = np.asarray(rows, dtype=np.float64)
    problems: list[str] = []

    def report(mask: npt.ArrayLike, what: str) -> None:
        where = np.flatnonzero(mask)
        if len(where):
            problems.append(f"{what}: {len(where)} rows (first: row {int(where[0])})")

    if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
        return [f"expected rows × {len(FEATURE_NAMES)} columns, got shape {x.shape}"]
    report(~np.isfinite(x).all(axis=1), "non-finite values")
    if problems:
        return problems
    for stream, stats in STREAMS:
        spread = "std" if stats == STATS_2D else "variance"
        weights = np.stack([x[:, _col(stream, lab, "weight")] for lab in LAMBDA_LABELS], axis=1)
        report((weights <= 0).any(axis=1), f"{stream}: weight ≤ 0")
        report((np.diff(weights, axis=1) < -1e-6 * weights[:, 1:]).any(axis=1),
               f"{stream}: weight decreases as λ decreases")
        for lab in LAMBDA_LABELS:
            name = f"{stream}_L{lab}"
            report(x[:, _col(stream, lab, spread)] < 0, f"{name}: negative {spread}")
            if stats != STATS_2D:
                continue
            mean = x[:, _col(stream, lab, "mean")]
            std = x[:, _col(stream, lab, "std")]
            magnitude = x[:, _col(stream, lab, "magnitude")]
            radius = x[:, _col(stream, lab, "radius")]
            cov = x[:, _col(stream, lab, "covariance")]
            pcc = x[:, _col(stream, lab, "pcc")]
            var = std * std
            report(magnitude < np.abs(mean) * (1 - REL_TOL), f"{name}: magnitude < |mean|")
            report(radius < var * (1 - REL_TOL) - 1e-12, f"{name}: radius < std²")
            one_way = np.isclose(magnitude, np.abs(mean), rtol=1e-9, atol=0)
            report(one_way & ~np.isclose(radius, var, rtol=REL_TOL, atol=1e-9),
                   f"{name}: one-way stream with radius ≠ std²")
            report(one_way & ((cov != 0) | (pcc != 0)),
                   f"{name}: one-way stream with non-zero covariance")
            report(np.abs(pcc) > 1 + PCC_SLACK, f"{name}: |pcc| > 1")
    return problems[:max_report]
