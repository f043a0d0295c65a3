"""N-BaIoT's per-device protocol: thresholds and windows from the opt third only, verdicts on
the rest; and its ``fediot protocol`` face."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from federated_data import write_uci_dataset
from fediot.core.data.layouts import open_dataset
from fediot.core.data.splits import split_device
from fediot.core.errors import FediotError
from fediot.core.metrics.window import smallest_quiet_window, window_vote
from fediot.core.nbaiot_protocol import (
    ProtocolSettings,
    evaluate_device,
    run_protocol,
    training_length_sweep,
)
from fediot.faces.cli import main  # noqa: F401  (registers every command)
from fediot.faces.cli.app import app, console


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uci_dataset(tmp_path_factory.mktemp("protocol") / "nbaiot", n_devices=2)


def test_smallest_quiet_window() -> None:
    flags = np.zeros(50, dtype=bool)
    assert smallest_quiet_window(flags, 10) == 1
    flags[[13, 14, 30]] = True  # a pair of alarms is outvoted from 4 rows on (a tie is no alert)
    window = smallest_quiet_window(flags, 100)
    assert window == 4
    assert not window_vote(flags, window).any()
    assert all(window_vote(flags, w).any() for w in range(1, window))
    assert smallest_quiet_window(np.ones(30, dtype=bool), 7) == 7  # none quiet: the cap
    # only full windows are judged: a flagged first row does not rule out every window
    first = np.zeros(50, dtype=bool)
    first[0] = True
    assert smallest_quiet_window(first, 100) == 2
    assert smallest_quiet_window(np.ones(3, dtype=bool), 100) == 3  # no longer than the rows


def test_a_device_is_judged_on_rows_it_never_fitted(dataset: Path) -> None:
    source = open_dataset(dataset)
    settings = ProtocolSettings(epochs=5, max_window=50)
    result = evaluate_device(source, 1, settings)
    split = split_device(source, 1)
    assert result.device == "Danmini_Doorbell"
    assert result.rows == {"train": len(split.train), "opt": len(split.opt),
                           "test": len(split.test_benign), "mirai.syn": 200, "gafgyt.udp": 150}
    # the same detector, refitted, gives the numbers back: threshold from opt, FPR on test
    detector = settings.detector().fit(split.train, split.opt)
    assert result.threshold == pytest.approx(detector.threshold_, rel=1e-6)
    test_flags = detector.score_samples(split.test_benign) > detector.threshold_
    assert result.fpr == pytest.approx(test_flags.mean())
    assert result.window == smallest_quiet_window(
        detector.score_samples(split.opt) > detector.threshold_, 50)
    assert result.fpr_window == pytest.approx(window_vote(test_flags, result.window).mean())
    assert result.tpr == {"mirai.syn": 1.0, "gafgyt.udp": 1.0}
    assert 0.0 < result.fpr < 0.5  # k = 1: about one benign row in six passes it


def test_the_sweep_trains_exactly_each_length(dataset: Path) -> None:
    points = training_length_sweep(open_dataset(dataset), [1, 3], [2],
                                   ProtocolSettings(max_window=20))
    assert [p.epochs for p in points] == [1, 3]
    assert [p.results[0].epochs_run for p in points] == [1, 3]
    assert all(p.results[0].best_epoch is None for p in points)
    assert run_protocol(open_dataset(dataset), [2], ProtocolSettings(epochs=2))[0].device == \
        "Ecobee_Thermostat"


def test_bad_settings_are_refused() -> None:
    with pytest.raises(FediotError, match="max_window"):
        ProtocolSettings(max_window=0)


def test_the_command_prints_the_tables_and_writes_the_results(
        dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 200)
    out = tmp_path / "protocol.json"
    result = CliRunner().invoke(app, ["protocol", "--dataset", "N-BaIoT", "--data-dir",
                                      str(dataset), "--epochs", "3", "--sweep", "1,2",
                                      "--max-window", "30", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "Danmini doorbell" in result.output and "Ecobee thermostat" in result.output
    assert "training-length sweep" in result.output
    saved = json.loads(out.read_text())
    assert [r["device"] for r in saved["results"]] == ["Danmini_Doorbell", "Ecobee_Thermostat"]
    assert [p["epochs"] for p in saved["sweep"]] == [1, 2]
    assert saved["settings"]["threshold_k"] == 1.0
    # the table shows each device's own figures
    first = saved["results"][0]
    assert f"{100 * first['fpr']:.2f}" in result.output
    bad = CliRunner().invoke(app, ["protocol", "--dataset", "N-BaIoT"])
    assert bad.exit_code == 2 and "--data-dir" in bad.output
