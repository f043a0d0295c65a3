"""Differential privacy: clipping, noise scale, the accountant, config keys, a private run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import dp_accounting
import numpy as np
import pytest

from federated_data import small_run_config, write_uci_dataset
from fediot.core.config import Config, ConfigError, PrivacyArgs, parse_config
from fediot.core.federated.privacy import (
    RDP_ORDERS,
    PrivacyPlan,
    clip_update,
    error_sensitivities,
    noisy_error_stats,
    noisy_scaler_stats,
    privacy_report,
    privatize_update,
    run_epsilon,
)
from fediot.core.federated.validation import ReplyContext, validate_reply
from fediot.core.model import ErrorStats


def plan(**changes: float) -> PrivacyPlan:
    values: dict[str, float] = dict(clip_norm=1.0, noise_multiplier=1.0,
                                    statistics_multiplier=2.0, feature_bound=25.0,
                                    error_bound=10.0, sampling_rate=0.5, rounds=10,
                                    threshold_releases=1, target_delta=1e-5)
    values.update(changes)
    return PrivacyPlan(**values)  # type: ignore[arg-type]


def norm(arrays: list[np.ndarray]) -> float:
    return math.sqrt(sum(float(np.sum(a.astype(np.float64) ** 2)) for a in arrays))


@pytest.mark.parametrize("scale", [1e-3, 0.5, 3.0, 1e4])
def test_clipping_bounds_the_norm_and_keeps_small_updates(scale: float) -> None:
    rng = np.random.default_rng(0)
    update = [scale * rng.normal(size=(30, 20)), scale * rng.normal(size=7)]
    clipped = clip_update(update, 1.5)
    assert norm(clipped) <= 1.5 * (1 + 1e-12)
    if norm(update) <= 1.5:
        for a, b in zip(update, clipped, strict=True):
            np.testing.assert_array_equal(a, b)
    else:  # the direction is kept
        np.testing.assert_allclose(clipped[0] / norm(clipped), update[0] / norm(update))


def test_privatized_update_is_clipped_delta_plus_noise_of_sigma_c() -> None:
    rng = np.random.default_rng(1)
    global_ = [np.zeros((200, 100), np.float32), np.ones(50, np.float32)]
    local = [g + 5.0 for g in global_]  # norm far above C: the clipped Δ has norm C
    p = plan(clip_norm=0.5, noise_multiplier=2.0)
    sent = privatize_update(local, global_, p, np.random.default_rng(7))
    assert [s.dtype for s in sent] == [np.float32, np.float32]
    residual = np.concatenate([(s - g).ravel() for s, g in zip(sent, global_, strict=True)])
    delta = np.concatenate([(w - g).ravel() for w, g in zip(local, global_, strict=True)])
    noise = residual - delta / np.linalg.norm(delta) * 0.5
    # 20,050 draws of N(0, (σC)² = 1): the sample std within a few % and mean near 0
    assert abs(noise.std() - 1.0) < 0.03
    assert abs(noise.mean()) < 0.03
    del rng


def test_statistics_noise_has_the_sensitivity_scale_and_replies_stay_valid() -> None:
    p = plan(statistics_multiplier=3.0)
    errors = np.random.default_rng(2).exponential(0.05, size=500)
    exact = ErrorStats.from_errors(errors)
    sums = [noisy_error_stats(errors, p, np.random.default_rng(seed)).sum
            for seed in range(400)]
    s_sum, _, _ = error_sensitivities(p)
    # Σe clamped at the histogram's bounds only in its tails: the spread is about 3·E
    assert 0.6 * 3 * s_sum < float(np.std(sums)) < 1.2 * 3 * s_sum
    noisy = noisy_error_stats(errors, p, np.random.default_rng(3))
    assert noisy.n == exact.n
    validate_reply("threshold_stats", None, noisy, ReplyContext("d", None, False))
    rows = np.random.default_rng(4).lognormal(2, 2, size=(300, 115))
    scaler = noisy_scaler_stats(rows, p, np.random.default_rng(5))
    assert scaler.n == 300
    assert np.all(scaler.sumsq >= scaler.sum ** 2 / 300 * (1 - 1e-9))


def test_epsilon_falls_with_sigma_and_grows_with_rounds() -> None:
    def eps(sigma: float, rounds: int) -> float:
        return run_epsilon(noise_multiplier=sigma, statistics_multiplier=20.0,
                           sampling_rate=0.5, rounds=rounds, threshold_releases=1, delta=1e-5)

    by_sigma = [eps(s, 20) for s in (1.0, 2.0, 4.0, 8.0)]
    assert by_sigma == sorted(by_sigma, reverse=True) and by_sigma[-1] < by_sigma[0]
    by_rounds = [eps(4.0, r) for r in (1, 10, 50, 200)]
    assert by_rounds == sorted(by_rounds) and by_rounds[0] < by_rounds[-1]


def test_epsilon_matches_dp_accountings_own_computation() -> None:
    p = plan(noise_multiplier=3.0, statistics_multiplier=15.0, sampling_rate=0.4)
    report = privacy_report(p, rounds=25, threshold_releases=2)
    accountant = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    accountant.compose(dp_accounting.PoissonSampledDpEvent(
        0.4, dp_accounting.GaussianDpEvent(1.5)), 25)  # a replaced row: sensitivity 2C
    accountant.compose(dp_accounting.GaussianDpEvent(15.0), 2 + 3 * 2)
    assert report["epsilon"] == pytest.approx(accountant.get_epsilon(1e-5), rel=1e-9)
    device = dp_accounting.rdp.RdpAccountant(list(RDP_ORDERS))
    device.compose(dp_accounting.PoissonSampledDpEvent(
        0.4, dp_accounting.GaussianDpEvent(3.0)), 25)
    assert report["epsilon_device_updates"] == pytest.approx(device.get_epsilon(1e-5))
    assert report["epsilon_server"] > report["epsilon"]


def test_target_epsilon_solves_the_multipliers() -> None:
    config = parse_config({"privacy_args": {"enabled": True, "target_epsilon": 3.0},
                           "train_args": {"comm_round": 10, "client_num_per_round": 3}})
    solved = PrivacyPlan.from_config(config)
    assert solved is not None
    report = privacy_report(solved, 10, 1)
    assert report["epsilon"] == pytest.approx(3.0, rel=1e-2)
    assert PrivacyPlan.from_config(Config()) is None


@pytest.mark.parametrize(("key", "value"), [
    ("clip_norm", 0.0), ("clip_norm", -1.0), ("noise_multiplier", -0.1),
    ("target_delta", 0.0), ("target_delta", 0.5), ("statistics_epsilon_share", 1.0),
    ("statistics_epsilon_share", 0.0), ("feature_bound", 0.0), ("error_bound", float("nan")),
    ("target_epsilon", -1.0), ("enabled", "yes"), ("clip_norm", "1"),
])
def test_bad_privacy_keys_are_refused_by_name(key: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"privacy_args\.{key}"):
        parse_config({"privacy_args": {key: value}})


def test_privacy_without_noise_is_refused_and_defaults_are_off() -> None:
    with pytest.raises(ConfigError, match=r"privacy_args\.noise_multiplier"):
        parse_config({"privacy_args": {"enabled": True, "noise_multiplier": 0}})
    assert parse_config({"privacy_args": {"enabled": True, "noise_multiplier": 0,
                                          "target_epsilon": 5}}).privacy_args.enabled
    assert Config().privacy_args == PrivacyArgs()
    with pytest.raises(ConfigError, match=r"unknown key privacy_args\.sigma"):
        parse_config({"privacy_args": {"sigma": 1.0}})


def test_a_private_in_process_run_finishes_and_records_epsilon(tmp_path: Path) -> None:
    from fediot.engines.simulation import simulate

    dataset = write_uci_dataset(tmp_path / "nbaiot", n_devices=3)
    config = small_run_config(dataset, tmp_path / "runs", **{
        "privacy_args.enabled": True, "privacy_args.noise_multiplier": 1.0,
        "privacy_args.clip_norm": 0.5, "train_args.client_num_per_round": 2})
    result, folder = simulate(config)
    assert result.privacy is not None and 0 < result.privacy["epsilon"] < math.inf
    recorded = json.loads((folder.root / "results.json").read_text())["privacy"]
    assert recorded["epsilon"] == pytest.approx(result.privacy["epsilon"])
    assert recorded["rounds"] == len(result.history)
    assert not result.rejections
