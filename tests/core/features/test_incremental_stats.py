"""Property tests: the incremental statistics equal a direct computation of the decayed sums."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from fediot.core.catalog import FEATURE_NAMES, LAMBDA_LABELS, LAMBDAS
from fediot.core.features.extractor import extract_features
from fediot.core.features.packets import KIND_IPV4, PacketTable
from fediot.core.features.reference import IncStat

gaps = st.lists(st.floats(min_value=0.0, max_value=20.0, allow_nan=False), min_size=1,
                max_size=40)
sizes = st.integers(min_value=60, max_value=1514)


def direct(times: list[float], values: list[float], lam: float) -> tuple[float, float, float]:
    """Weight, mean and variance of the decayed sums, straight from the definition."""
    t_now = times[-1]
    w = [2.0 ** (-lam * (t_now - t)) for t in times]
    total = sum(w) + 1e-20 * 2.0 ** (-lam * (t_now - times[0]))
    mean = sum(wi * v for wi, v in zip(w, values, strict=True)) / total
    second = sum(wi * v * v for wi, v in zip(w, values, strict=True)) / total
    return total, mean, abs(second - mean * mean)


@settings(max_examples=60, deadline=None)
@given(gap_list=gaps, data=st.data())
def test_incstat_matches_direct_sums(gap_list: list[float], data: st.DataObject) -> None:
    times = list(np.cumsum(gap_list) + 1000.0)
    values = [float(data.draw(sizes)) for _ in times]
    for lam in LAMBDAS:
        stat = IncStat(lam, times[0])
        for t, v in zip(times, values, strict=True):
            stat.insert(v, t)
        w, mean, var = direct(times, values, lam)
        assert math.isclose(stat.w, w, rel_tol=1e-9)
        assert math.isclose(stat.mean(), mean, rel_tol=1e-9)
        assert math.isclose(stat.var(), var, rel_tol=1e-6, abs_tol=1e-6 * mean * mean)


@settings(max_examples=40, deadline=None)
@given(gap_list=gaps, data=st.data())
def test_extractor_source_stream_matches_direct_sums(
    gap_list: list[float], data: st.DataObject
) -> None:
    """One host sending: its MI_dir and H streams are the direct decayed statistics."""
    times = list(np.cumsum(gap_list) + 1.5e9)
    values = [float(data.draw(sizes)) for _ in times]
    n = len(times)
    table = PacketTable.from_columns(
        timestamp=times, frame_len=[int(v) for v in values], src_mac=[1] * n, dst_mac=[2] * n,
        src_ip=["10.0.0.1"] * n, dst_ip=["10.0.0.2"] * n, src_port=[1234] * n,
        dst_port=[80] * n, kind=[KIND_IPV4] * n, ip_proto=[6] * n,
    )
    last = extract_features(table)[-1]
    for lam, label in zip(LAMBDAS, LAMBDA_LABELS, strict=True):
        w, mean, var = direct(times, values, lam)
        for stream in ("MI_dir", "H"):
            got = [last[FEATURE_NAMES.index(f"{stream}_L{label}_{s}")]
                   for s in ("weight", "mean", "variance")]
            assert math.isclose(got[0], w, rel_tol=1e-9)
            assert math.isclose(got[1], mean, rel_tol=1e-9)
            assert math.isclose(got[2], var, rel_tol=1e-6, abs_tol=1e-6 * mean * mean)
