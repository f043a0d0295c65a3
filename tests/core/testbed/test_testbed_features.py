"""The testbed's feature rows: N-BaIoT's structural relations (checked on real rows too),
non-IID devices, and attacks that stand out from their device's benign traffic."""
# The relation checks are run on the real rows first: a check that fails there is not a
# property of N-BaIoT features.

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt
import pandas as pd
import pytest

from fediot.core.catalog import DEVICES, FEATURE_NAMES, LAMBDA_LABELS, feature_block
from fediot.core.features.relations import relation_violations as core_relation_violations
from fediot.core.testbed import TestbedDataset, build_testbed

Matrix = npt.NDArray[np.float64]
EPOCH_2017 = 1483228800.0
EPOCH_2019 = 1546300800.0
SCALE = 0.05


def column(rows: Matrix, name: str) -> Matrix:
    return rows[:, FEATURE_NAMES.index(name)]


def relation_violations(rows: Matrix) -> list[str]:
    """Every structural relation of N-BaIoT rows that ``rows`` break (empty: none)."""
    broken: list[str] = []

    def check(ok: bool | np.bool_, what: str) -> None:
        if not ok:
            broken.append(what)

    check(bool(np.isfinite(rows).all()), "non-finite values")
    for stream in ("MI_dir", "H", "HH", "HH_jit", "HpHp"):
        for lam in LAMBDA_LABELS:
            prefix = f"{stream}_L{lam}_"
            weight, mean = column(rows, prefix + "weight"), column(rows, prefix + "mean")
            check(np.all(weight >= 1 - 1e-9), f"{prefix}weight < 1 (a stream's own packet)")
            if stream != "HH_jit":
                check(np.all((mean >= 60 - 1e-6) & (mean <= 1518 + 1e-6)),
                      f"{prefix}mean outside Ethernet frame sizes")
            if stream in ("MI_dir", "H", "HH_jit"):
                variance = column(rows, prefix + "variance")
                check(np.all(variance >= -1e-6 * np.maximum(1, mean**2)), f"{prefix}variance < 0")
                continue
            std = column(rows, prefix + "std")
            magnitude = column(rows, prefix + "magnitude")
            radius = column(rows, prefix + "radius")
            pcc = column(rows, prefix + "pcc")
            check(np.all(std >= 0), f"{prefix}std < 0")
            check(np.all(magnitude >= np.abs(mean) * (1 - 1e-9) - 1e-9),
                  f"{prefix}magnitude < |mean|")
            check(np.all(radius >= std**2 - 1e-7 * np.maximum(1, std**2)),
                  f"{prefix}radius < std²")
            one_way = np.isclose(magnitude, np.abs(mean), rtol=1e-9, atol=1e-9)
            check(np.allclose(radius[one_way], std[one_way] ** 2, rtol=1e-6, atol=1e-6),
                  f"{prefix}radius != std² where magnitude == |mean|")
            # A one-way channel has no residual products: covariance and pcc are 0. (|pcc| ≤ 1
            # is NOT an invariant: Kitsune's damped residual-product covariance can exceed
            # std_i·std_j on two-way channels, and the reference extractor agrees.)
            covariance = column(rows, prefix + "covariance")
            check(np.all(covariance[one_way] == 0) and np.all(pcc[one_way] == 0),
                  f"{prefix}covariance or pcc != 0 on a one-way channel")
    same_source = np.all(np.isclose(rows[:, feature_block("H")], rows[:, feature_block("MI_dir")],
                                    rtol=1e-9, atol=1e-9), axis=1)
    check(same_source.mean() >= 0.95, "H differs from MI_dir in more than 5 % of rows")
    first = rows[0, feature_block("HH_jit")].reshape(len(LAMBDA_LABELS), 3)
    check(np.all(first[:, 0] == 1.0), "first row: HH_jit weight is not 1")
    check(np.all((first[:, 1] > EPOCH_2017) & (first[:, 1] < EPOCH_2019)),
          "first row: HH_jit mean is not the absolute epoch time of 2017/2018")
    return broken


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> TestbedDataset:
    return build_testbed(seed=0, scale=SCALE, cache_dir=tmp_path_factory.mktemp("cache"))


def real_files(nbaiot_dir: Path) -> list[Path]:
    files = sorted(p for p in nbaiot_dir.glob("*/**/*.csv") if "metadata" not in p.parts)
    assert len(files) == 3
    return files


def test_relations_hold_for_real_n_baiot_rows(nbaiot_dir: Path) -> None:
    for path in real_files(nbaiot_dir):
        rows = pd.read_csv(path).to_numpy(dtype=np.float64)
        assert relation_violations(rows) == [], path


def test_relation_checks_catch_broken_rows(nbaiot_dir: Path) -> None:
    rows = pd.read_csv(real_files(nbaiot_dir)[0]).to_numpy(dtype=np.float64)
    for name, value in [("HH_L1_radius", -1.0), ("MI_dir_L3_variance", -5.0),
                        ("HpHp_L5_weight", 0.0), ("H_L0.1_mean", 10.0)]:
        broken = rows.copy()
        broken[7, FEATURE_NAMES.index(name)] = value
        assert relation_violations(broken), name
    rows[0, FEATURE_NAMES.index("HH_jit_L5_mean")] = 3.0
    assert relation_violations(rows)


def test_relations_hold_for_every_testbed_file(dataset: TestbedDataset) -> None:
    for item in dataset.entries():
        rows = dataset.load(item["uci_id"], item["traffic_class"])
        assert relation_violations(rows) == [], item["path"]
        # The project's own check too, with |pcc| ≤ 1 (+ PCC_SLACK) and weights growing as λ
        # shrinks.
        assert core_relation_violations(rows) == [], item["path"]
        # One MAC per IP in the simulated lab: H equals MI_dir on every row.
        np.testing.assert_array_equal(rows[:, feature_block("H")],
                                      rows[:, feature_block("MI_dir")])
        # The first jitter of the first channel is the first packet's epoch time.
        assert column(rows, "HH_jit_L5_mean")[0] == item["first_packet_epoch"]


def log_scaled(rows: Matrix) -> Matrix:
    return np.sign(rows) * np.log1p(np.abs(rows))


def test_benign_rows_tell_the_devices_apart(dataset: TestbedDataset) -> None:
    rng = np.random.default_rng(0)
    train_x, train_y, test_x, test_y = [], [], [], []
    for device in DEVICES:
        rows = log_scaled(dataset.load(device.uci_id, "benign"))[:1000]
        held = rng.random(len(rows)) < 0.3
        train_x.append(rows[~held])
        test_x.append(rows[held])
        train_y.append(np.full(int((~held).sum()), device.uci_id))
        test_y.append(np.full(int(held.sum()), device.uci_id))
    x, y = np.vstack(train_x), np.concatenate(train_y)
    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-9
    reference, queries = (x - mean) / std, (np.vstack(test_x) - mean) / std
    distance = ((queries**2).sum(1)[:, None] + (reference**2).sum(1)[None, :]
                - 2 * queries @ reference.T)
    predicted = y[np.argmin(distance, axis=1)]
    truth = np.concatenate(test_y)
    accuracy = float(np.mean(predicted == truth))
    assert accuracy > 0.85
    per_device = [np.mean(predicted[truth == d.uci_id] == d.uci_id) for d in DEVICES]
    assert min(per_device) > 0.6


def ks_statistic(a: Matrix, b: Matrix) -> float:
    values = np.sort(np.concatenate([a, b]))
    cdf_a = np.searchsorted(np.sort(a), values, side="right") / len(a)
    cdf_b = np.searchsorted(np.sort(b), values, side="right") / len(b)
    return float(np.max(np.abs(cdf_a - cdf_b)))


KEY_FEATURES = ("MI_dir_L1_weight", "MI_dir_L1_mean", "MI_dir_L1_variance", "HH_L1_weight",
                "HH_L1_mean", "HpHp_L1_weight", "HH_jit_L1_mean", "MI_dir_L0.01_weight")


def test_every_attack_file_stands_out_from_its_device_benign_rows(
        dataset: TestbedDataset) -> None:
    for device in DEVICES:
        benign = dataset.load(device.uci_id, "benign")
        for traffic_class in device.traffic_classes[1:]:
            attack = dataset.load(device.uci_id, traffic_class)
            distance = max(ks_statistic(column(attack, f), column(benign, f))
                           for f in KEY_FEATURES)
            assert distance > 0.6, (device.name, traffic_class, distance)


def test_benign_rows_of_one_device_do_not_stand_out_from_each_other(
        dataset: TestbedDataset) -> None:
    # The contrast above means something only if benign halves look alike.
    benign = dataset.load(6, "benign")
    odd, even = benign[1::2], benign[::2]
    distance = max(ks_statistic(column(odd, f), column(even, f)) for f in KEY_FEATURES)
    assert distance < 0.1


def same_source_share(rows: Matrix) -> float:
    """Share of consecutive rows whose MI_dir weights at λ = 0.01 and 0.1 decay by one time
    step, as they do when both rows' packets come from one source."""
    slow, fast = column(rows, "MI_dir_L0.01_weight"), column(rows, "MI_dir_L0.1_weight")
    dt_slow = -np.log2(np.clip((slow[1:] - 1) / slow[:-1], 1e-300, None)) / 0.01
    dt_fast = -np.log2(np.clip((fast[1:] - 1) / fast[:-1], 1e-300, None)) / 0.1
    return float(np.mean(np.abs(dt_slow - dt_fast) < 0.05 * dt_slow + 0.5))


def test_benign_rows_are_the_frames_the_device_sends(nbaiot_dir: Path,
                                                     dataset: TestbedDataset) -> None:
    # Real rows: one source (the doorbell) throughout, its peers' answers never a row.
    real = pd.read_csv(nbaiot_dir / "Device_unspecified" / "benign_traffic.csv").to_numpy(
        dtype=np.float64)
    assert same_source_share(real) > 0.99
    for device in DEVICES:
        rows = dataset.load(device.uci_id, "benign")
        assert same_source_share(rows) > 0.95, device.name
    # The doorbell as the real one: about 30 decayed packets at λ = 0.01 (0.2 rows/s).
    doorbell = column(dataset.load(1, "benign"), "MI_dir_L0.01_weight")
    assert 25 < np.median(doorbell) < 35
