"""The fast extractor against hand-worked values, the plain-Python oracle and real traffic."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fediot.core.catalog import FEATURE_NAMES, LAMBDAS, N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.features.extractor import ExtractorOptions, FeatureExtractor, extract_features
from fediot.core.features.packets import (
    KIND_IPV4,
    PacketTable,
)
from fediot.core.features.pcap import read_capture
from fediot.core.features.reference import reference_features
from fediot.core.features.relations import relation_violations
from traffic import random_traffic

A, B = "10.0.0.1", "10.0.0.2"
MAC_A, MAC_B = 0xA, 0xB
T0 = 1_000.0


def col(name: str) -> int:
    return FEATURE_NAMES.index(name)


def packets(rows: list[tuple[float, str, str, int]]) -> PacketTable:
    """(time, src, dst, size) IPv4/UDP packets between hosts A and B, ports 1000 → 2000."""
    macs = {A: MAC_A, B: MAC_B}
    return PacketTable.from_columns(
        timestamp=[r[0] for r in rows],
        frame_len=[r[3] for r in rows],
        src_mac=[macs[r[1]] for r in rows],
        dst_mac=[macs[r[2]] for r in rows],
        src_ip=[r[1] for r in rows],
        dst_ip=[r[2] for r in rows],
        src_port=[1000 if r[1] == A else 2000 for r in rows],
        dst_port=[2000 if r[1] == A else 1000 for r in rows],
        kind=[KIND_IPV4] * len(rows),
        ip_proto=[17] * len(rows),
    )


HAND = packets([
    (T0, A, B, 100),
    (T0 + 0.5, B, A, 200),
    (T0 + 1.0, A, B, 300),
    (T0 + 1.5, B, A, 100),
])


def test_hand_worked_sequence_at_lambda_1() -> None:
    """Values worked out on paper for λ = 1 (decay factor 2^-Δt)."""
    x = extract_features(HAND)
    half = 2 ** -0.5

    # packet 1: every stream is new
    assert x[0, col("MI_dir_L1_weight")] == 1.0
    assert x[0, col("MI_dir_L1_mean")] == 100.0
    assert x[0, col("MI_dir_L1_variance")] == 0.0
    assert x[0, col("HH_L1_magnitude")] == 100.0
    assert x[0, col("HH_jit_L1_mean")] == T0  # N-BaIoT: a new channel's first jitter is t

    # packet 2, B → A: the reverse channel's mean joins the magnitude
    assert x[1, col("HH_L1_mean")] == pytest.approx(200.0)
    assert x[1, col("HH_L1_magnitude")] == pytest.approx(math.hypot(200, 100))
    assert x[1, col("HH_L1_covariance")] == 0.0
    assert x[1, col("HH_jit_L1_mean")] == T0 + 0.5

    # packet 3, A → B one second after packet 1: old weight halves
    w = 0.5 + 1
    mean = (100 * 0.5 + 300) / w
    var = (100**2 * 0.5 + 300**2) / w - mean**2
    assert x[2, col("MI_dir_L1_weight")] == pytest.approx(w)
    assert x[2, col("MI_dir_L1_mean")] == pytest.approx(mean)
    assert x[2, col("MI_dir_L1_variance")] == pytest.approx(var)
    assert x[2, col("HH_L1_std")] == pytest.approx(math.sqrt(var))
    assert x[2, col("HH_L1_magnitude")] == pytest.approx(math.hypot(mean, 200))
    assert x[2, col("HH_L1_radius")] == pytest.approx(var)  # the reverse has variance 0
    jit_w = 0.5 + 1
    jit_mean = (T0 * 0.5 + 1.0) / jit_w
    assert x[2, col("HH_jit_L1_weight")] == pytest.approx(jit_w)
    assert x[2, col("HH_jit_L1_mean")] == pytest.approx(jit_mean)

    # packet 4, B → A: the first non-zero residual product; A → B's residual from packet 3
    # has aged half a second, like the sums (the reference convention)
    w_ba = 0.5 + 1
    mean_ba = (200 * 0.5 + 100) / w_ba
    var_ba = (200**2 * 0.5 + 100**2) / w_ba - mean_ba**2
    w3 = ((1 * half + 1) * half + 1) * half + 1  # pair updated at 0, 0.5, 1.0, 1.5
    cov = (100 - mean_ba) * (300 - mean) * half / w3
    assert x[3, col("HH_L1_mean")] == pytest.approx(mean_ba)
    assert x[3, col("HH_L1_covariance")] == pytest.approx(cov)
    assert x[3, col("HH_L1_pcc")] == pytest.approx(cov / (math.sqrt(var_ba) * math.sqrt(var)))
    assert x[3, col("HH_L1_radius")] == pytest.approx(math.hypot(var_ba, var))
    # the socket streams see the same packets as the channel streams here
    np.testing.assert_allclose(x[:, col("HpHp_L1_weight"):col("HpHp_L1_pcc") + 1],
                               x[:, col("HH_L1_weight"):col("HH_L1_pcc") + 1])


def test_weights_follow_each_lambda() -> None:
    x = extract_features(HAND)
    for lam, label in zip(LAMBDAS, ("5", "3", "1", "0.1", "0.01"), strict=True):
        expected = 2 ** (-lam * 1.0) + 1
        assert x[2, col(f"MI_dir_L{label}_weight")] == pytest.approx(expected)


def test_first_jitter_option_zero() -> None:
    x = extract_features(HAND, options=ExtractorOptions(first_jitter="zero"))
    assert x[0, col("HH_jit_L1_mean")] == 0.0
    assert x[2, col("HH_jit_L1_mean")] == pytest.approx(1.0 / 1.5)


def test_bad_options_and_timestamps_are_named() -> None:
    with pytest.raises(FediotError, match="first_jitter"):
        ExtractorOptions(first_jitter="later")
    bad = packets([(T0, A, B, 100), (float("nan"), A, B, 100)])
    with pytest.raises(FediotError, match="packet #1"):
        extract_features(bad)


@pytest.mark.parametrize("first_jitter", ["epoch", "zero"])
def test_fast_extractor_equals_reference_bit_for_bit(first_jitter: str) -> None:
    table = random_traffic(3000, seed=1)
    fast = extract_features(table, options=ExtractorOptions(first_jitter=first_jitter))
    slow = reference_features(table, first_jitter=first_jitter)
    np.testing.assert_array_equal(fast, slow)


def test_any_split_of_a_capture_gives_the_same_rows() -> None:
    table = random_traffic(2000, seed=2)
    whole = extract_features(table)
    chunked = extract_features(table, options=ExtractorOptions(chunk_size=7))
    np.testing.assert_array_equal(whole, chunked)
    live = FeatureExtractor()
    one_by_one = np.array([
        live.update(
            timestamp=float(table.timestamp[i]), frame_len=int(table.frame_len[i]),
            src_mac=int(table.src_mac[i]), dst_mac=int(table.dst_mac[i]),
            src_ip=str(table.src_ip[i]), dst_ip=str(table.dst_ip[i]),
            src_port=int(table.src_port[i]), dst_port=int(table.dst_port[i]),
            kind=int(table.kind[i]),
        )
        for i in range(300)
    ])
    np.testing.assert_array_equal(one_by_one, whole[:300])


def test_progress_reports_every_packet() -> None:
    table = random_traffic(1000, seed=3)
    seen: list[int] = []
    extract_features(table, options=ExtractorOptions(chunk_size=300), progress=seen.append)
    assert seen == [300, 300, 300, 100]


def test_real_capture_features(real_pcap: Path) -> None:
    capture = read_capture(real_pcap)
    x = extract_features(capture.packets)
    assert x.shape == (2000, N_FEATURES)
    assert np.isfinite(x).all()
    assert relation_violations(x) == []
    # row 0: a cold start, as in the first row of every N-BaIoT file
    weights = [i for i, name in enumerate(FEATURE_NAMES) if name.endswith("_weight")]
    np.testing.assert_array_equal(x[0, weights], 1.0)
    assert x[0, col("MI_dir_L5_mean")] == capture.packets.frame_len[0]
    assert x[0, col("HH_jit_L5_mean")] == capture.packets.timestamp[0]
    # the oracle agrees on real traffic too
    np.testing.assert_array_equal(x, reference_features(capture.packets))


def test_relations_hold_in_real_nbaiot_rows(nbaiot_dir: Path) -> None:
    """The relation check itself is validated on the real rows it is meant to describe."""
    files = sorted(p for p in nbaiot_dir.glob("*/**/*.csv") if "metadata" not in p.parts)
    assert len(files) == 3
    for path in files:
        rows = np.loadtxt(path, delimiter=",", skiprows=1)
        assert relation_violations(rows) == [], path


def test_relations_catch_broken_rows() -> None:
    x = extract_features(random_traffic(500, seed=4))
    broken = x.copy()
    broken[10, col("HH_L1_radius")] = -1.0
    assert any("radius" in p for p in relation_violations(broken))
    swapped = x.copy()
    swapped[:, [col("MI_dir_L5_weight"), col("MI_dir_L0.01_weight")]] = swapped[
        :, [col("MI_dir_L0.01_weight"), col("MI_dir_L5_weight")]
    ]
    assert relation_violations(swapped) != []
