"""Additive confusion counts and per-class flag counts."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from fediot.core.metrics import ClassCounts, ConfusionCounts, MetricsInputError


def test_counts_and_rates() -> None:
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], dtype=bool)
    flags = np.array([1, 1, 1, 0, 1, 0, 0, 0, 0, 0], dtype=bool)
    counts = ConfusionCounts.from_labels(truth, flags)
    assert counts == ConfusionCounts(tp=3, fp=1, tn=5, fn=1)
    assert counts.accuracy == pytest.approx(0.8)
    assert counts.precision == pytest.approx(0.75)
    assert counts.recall == counts.tpr == pytest.approx(0.75)
    assert counts.fpr == pytest.approx(1 / 6)
    assert counts.f1 == pytest.approx(0.75)


def test_addition_pools_counts_not_ratios() -> None:
    a = ConfusionCounts(tp=9, fp=0, tn=1, fn=0)
    b = ConfusionCounts(tp=0, fp=1, tn=89, fn=1)
    pooled = ConfusionCounts.pool([a, b])
    assert pooled == ConfusionCounts(tp=9, fp=1, tn=90, fn=1)
    assert pooled.recall == pytest.approx(0.9)
    truth = np.array([1, 0, 1, 0])
    flags = np.array([1, 1, 0, 0])
    halves = ConfusionCounts.from_labels(truth[:2], flags[:2]) + ConfusionCounts.from_labels(
        truth[2:], flags[2:]
    )
    assert halves == ConfusionCounts.from_labels(truth, flags)


def test_undefined_ratios_are_nan_and_none_in_rates() -> None:
    benign_only = ConfusionCounts(tp=0, fp=2, tn=8, fn=0)
    assert math.isnan(benign_only.recall)
    assert benign_only.precision == 0.0
    assert benign_only.f1 == 0.0  # errors but no true positive
    assert math.isnan(ConfusionCounts(tn=5).f1)  # tp = fp = fn = 0
    assert math.isnan(ConfusionCounts().accuracy)
    rates = benign_only.rates()
    assert rates["recall"] is None and rates["fpr"] == pytest.approx(0.2)
    json.dumps(rates)


def test_confusion_dict_round_trip_and_validation() -> None:
    counts = ConfusionCounts(tp=1, fp=2, tn=3, fn=4)
    assert ConfusionCounts.from_dict(json.loads(json.dumps(counts.to_dict()))) == counts
    with pytest.raises(MetricsInputError, match="lacks key 'fn'"):
        ConfusionCounts.from_dict({"tp": 1, "fp": 2, "tn": 3})
    with pytest.raises(MetricsInputError, match=r"ConfusionCounts\.tp must be a non-negative"):
        ConfusionCounts(tp=-1)
    with pytest.raises(MetricsInputError, match="3 rows but flagged has 2"):
        ConfusionCounts.from_labels([1, 0, 1], [1, 0])


def test_class_counts() -> None:
    classes = np.array(["benign", "mirai.udp", "benign", "gafgyt.udp", "mirai.udp", "benign"])
    flags = np.array([0, 1, 1, 1, 0, 0], dtype=bool)
    counts = ClassCounts.from_labels(classes, flags)
    assert dict(counts.counts) == {"benign": (1, 3), "gafgyt.udp": (1, 1), "mirai.udp": (1, 2)}
    assert counts.flag_rate("benign") == pytest.approx(1 / 3)
    assert counts.tpr_by_attack() == {"gafgyt.udp": 1.0, "mirai.udp": 0.5}
    assert math.isnan(counts.flag_rate("mirai.ack"))
    assert counts.confusion() == ConfusionCounts(tp=2, fp=1, tn=2, fn=1)
    assert counts.confusion() == ConfusionCounts.from_labels(classes != "benign", flags)

    device_b = ClassCounts.from_flags("mirai.udp", np.ones(8, dtype=bool))
    merged = counts + device_b
    assert merged.counts["mirai.udp"] == (9, 10)
    assert ClassCounts.pool([counts, device_b]) == merged
    assert ClassCounts.pool(iter([device_b, counts, device_b])) == merged + device_b
    assert ClassCounts.pool([]) == ClassCounts({})
    with pytest.raises(TypeError, match="cannot pool dict"):
        ClassCounts.pool([counts, {"benign": (1, 2)}])  # type: ignore[list-item]
    again = ClassCounts.from_dict(json.loads(json.dumps(merged.to_dict())))
    assert again == merged
    assert list(again.counts) == ["benign", "gafgyt.udp", "mirai.udp"]  # catalogue order


def test_class_counts_validation() -> None:
    with pytest.raises(MetricsInputError, match=r"unknown traffic class 'mirai\.flood'"):
        ClassCounts.from_flags("mirai.flood", [True])
    with pytest.raises(MetricsInputError, match="flags 3 of only 2 rows"):
        ClassCounts({"benign": (3, 2)})
    with pytest.raises(MetricsInputError, match="lacks key 'total'"):
        ClassCounts.from_dict({"benign": {"flagged": 1}})
