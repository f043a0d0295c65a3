"""Honest device state in the core: losses and rejoins named in the logs, and a device that
missed its last training rounds kept out of the threshold and evaluation steps.

The pools are the real in-process devices behind a door that drops chosen tasks, as a killed
device would (no reply at all)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pytest

from federated_data import synthetic_clients
from fediot.core.catalog import DEVICES, N_FEATURES
from fediot.core.config import Config
from fediot.core.federated.client import ClientData
from fediot.core.federated.messages import LogLine, Reply
from fediot.core.federated.participation import DeviceContacts, StepContact, stale_devices
from fediot.core.federated.server import FedDetectServer, RoundRecord, RunResult
from fediot.engines.inprocess import SequentialPool

Silence = Callable[[str, str, Any], bool]
"""(method, device, task) → whether the device stays silent."""


class FlakyPool(SequentialPool):
    """Real devices; a task ``silent`` picks gets no reply, as from a device that is down."""

    def __init__(self, clients: list[ClientData], silent: Silence) -> None:
        super().__init__(clients)
        self.silent = silent

    def exchange(self, method: str, tasks: Mapping[str, Any]) -> dict[str, Reply]:
        return super().exchange(method, {cid: task for cid, task in tasks.items()
                                         if not self.silent(method, cid, task)})


class Recorder:
    def __init__(self) -> None:
        self.lines: list[LogLine] = []
        self.contacts: list[StepContact] = []
        self.phases: list[tuple[str, str]] = []

    def on_phase(self, phase: str, detail: str) -> None:
        self.phases.append((phase, detail))

    def on_round(self, record: RoundRecord) -> None:
        pass

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        self.lines.extend(lines)

    def on_contact(self, contact: StepContact) -> None:
        self.contacts.append(contact)

    def server_lines(self, device: str) -> list[str]:
        return [line.message for line in self.lines if line.device == device
                and line.message.startswith(("lost:", "rejoined:", "left out"))]


def config(**overrides: object) -> Config:
    base = {"train_args.client_num_in_total": 3, "train_args.client_num_per_round": 3,
            "train_args.comm_round": 3, "detection_args.window": 5}
    return Config().with_overrides({**base, **overrides})


def record(server_round: int, clients: list[str], answered: list[str],
           rejected: dict[str, str] | None = None) -> RoundRecord:
    return RoundRecord(server_round, 0.01, clients, answered, 1.0, 10, 0.1, {},
                       rejected=rejected or {})


# --- the rule -----------------------------------------------------------------------------------


def test_a_device_is_stale_only_when_sampled_and_silent_in_its_last_rounds() -> None:
    history = [
        record(1, ["a", "b", "c", "d"], ["a", "b", "c", "d"]),
        record(2, ["a", "b", "c"], ["b"], rejected={"c": "update norm"}),  # d not sampled
        record(3, ["b", "c"], ["b", "c"]),
        record(4, ["b"], ["b"]),
    ]
    # a: sampled in round 2, silent, never sampled again → out; c: rejected, not silent;
    # d: not sampled since it answered → in
    assert stale_devices(history, 1) == {"a": "no reply to its last training round (round 2)"}
    assert stale_devices(history, 2) == {}  # a answered round 1
    assert stale_devices(history, 0) == {}
    history.append(record(5, ["a", "b"], ["b"]))
    assert stale_devices(history, 2) == {
        "a": "no reply to its last 2 training rounds (rounds 2, 5)"}
    history.append(record(6, ["a"], ["a"]))  # back: trained again
    assert stale_devices(history, 1) == stale_devices(history, 2) == {}


def test_losses_and_rejoins_are_lines_naming_the_device() -> None:
    contacts = DeviceContacts()
    assert contacts.update(StepContact("fit", 1, ("a", "b"), ())) == []
    lost = contacts.update(StepContact("fit", 2, ("a",), ("b",)))
    assert [(x.device, x.step, x.round, x.level) for x in lost] == [("b", "fit", 2, "WARNING")]
    assert lost[0].message.startswith("lost: no reply to fit of round 2")
    assert contacts.update(StepContact("fit", 3, ("a",), ("b",))) == []  # once per loss
    back = contacts.update(StepContact("evaluate", None, ("a", "b"), ()))
    assert [(x.device, x.step, x.round, x.level) for x in back] == [
        ("b", "evaluate", None, "INFO")]
    assert back[0].message == "rejoined: answered evaluate (no reply since fit of round 2)"


# --- FedDetectServer ----------------------------------------------------------------------------


def test_a_device_silent_in_training_is_left_out_of_threshold_and_evaluation() -> None:
    clients = synthetic_clients()
    silent = clients[2].client_id
    observer = Recorder()
    pool = FlakyPool(clients, lambda method, cid, task: method == "fit" and cid == silent)
    result = FedDetectServer(config(), observer).run(pool)
    assert result.excluded == {silent: "no reply to its last training round (round 3)"}
    assert silent not in result.thresholds.per_device
    assert silent not in result.threshold_stats
    assert set(result.evaluation.devices) == {c.client_id for c in clients} - {silent}
    # asked for every step it was due, never for the threshold or evaluation
    asked = {(c.step, c.server_round) for c in observer.contacts
             if silent in c.answered + c.missing}
    assert asked == {("scaler_stats", None), ("fit", 1), ("fit", 2), ("fit", 3)}
    assert observer.server_lines(silent) == [
        "lost: no reply to fit of round 1; the step goes on without it",
        "left out of the threshold and evaluation steps: no reply to its last training round "
        "(round 3)"]
    assert ("excluded", f"{silent}: no reply to its last training round (round 3)") in (
        observer.phases)
    # with the rule off it is calibrated and evaluated like the others
    kept = FedDetectServer(config(**{"train_args.stale_after_missed_rounds": 0})).run(
        FlakyPool(clients, lambda method, cid, task: method == "fit" and cid == silent))
    assert kept.excluded == {}
    assert set(kept.evaluation.devices) == {c.client_id for c in clients}


def test_a_device_back_in_training_rejoins_and_stays_in() -> None:
    clients = synthetic_clients()
    back = clients[0].client_id
    observer = Recorder()
    pool = FlakyPool(clients, lambda method, cid, task: (
        method == "fit" and cid == back and task.server_round == 2))
    result = FedDetectServer(config(), observer).run(pool)
    assert result.excluded == {}
    assert back in result.evaluation.devices
    assert back not in result.history[1].answered and back in result.history[2].answered
    assert observer.server_lines(back) == [
        "lost: no reply to fit of round 2; the step goes on without it",
        "rejoined: answered fit of round 3 (no reply since fit of round 2)"]


def test_a_device_only_sampled_less_is_never_left_out() -> None:
    result = FedDetectServer(config(**{"train_args.client_num_per_round": 1,
                                       "train_args.comm_round": 4})).run(
        SequentialPool(synthetic_clients()))
    assert result.excluded == {}
    assert len(result.evaluation.devices) == 3


def test_in_training_evaluation_leaves_the_stale_device_out_too() -> None:
    clients = synthetic_clients()
    silent = clients[1].client_id
    result = FedDetectServer(config(**{"validation_args.frequency_of_the_test": 1})).run(
        FlakyPool(clients, lambda method, cid, task: (
            method == "fit" and cid == silent and task.server_round >= 2)))
    evaluated = [r.evaluation for r in result.history]
    assert evaluated[0] is not None and silent in evaluated[0]["thresholds"]["per_device"]
    assert evaluated[1] is not None and silent not in evaluated[1]["thresholds"]["per_device"]


# --- why: a stale device's errors spoil a global threshold -------------------------------------


def _rows(uci_id: int, n: int, attack_shift: float, seed: int, spread: float) -> np.ndarray:
    """Rows around the device's own centre; attacks shifted by ``attack_shift`` (in log
    space) on 20 features: close enough to benign that the threshold's level matters."""
    rng = np.random.default_rng([seed, uci_id])
    centre = np.random.default_rng(uci_id).uniform(1, 6, N_FEATURES)
    logs = centre + spread * rng.standard_normal((n, N_FEATURES))
    logs[:, :20] += attack_shift
    return np.expm1(logs).astype(np.float32)


def _noisy_federation() -> list[ClientData]:
    """Three devices; the third's traffic is three times as spread as the others'."""
    clients = []
    for i, device in enumerate(DEVICES[:3]):
        spread = 0.5 if i == 2 else 0.15
        benign = _rows(device.uci_id, 600, 0.0, 0, spread)
        clients.append(ClientData(
            client_id=device.name, uci_id=device.uci_id, train=benign[:200],
            opt=benign[200:400], test_benign=benign[400:],
            test_attacks={"gafgyt.udp": _rows(device.uci_id, 150, 1.0, 1, spread)}))
    return clients


def test_leaving_the_stale_device_out_keeps_a_global_threshold_and_the_f1() -> None:
    clients = _noisy_federation()
    silent = clients[2].client_id

    def run(after_missed: int) -> RunResult:
        return FedDetectServer(config(**{
            "detection_args.threshold_mode": "global", "detection_args.window": 1,
            "train_args.stale_after_missed_rounds": after_missed})).run(
            FlakyPool(clients, lambda method, cid, task: method == "fit" and cid == silent))

    left_out, pooled_in = run(1), run(0)
    assert left_out.excluded and not pooled_in.excluded
    # the device the model never learned raises the one threshold of every device …
    assert pooled_in.thresholds.global_threshold > 1.5 * left_out.thresholds.global_threshold
    # … so the others miss attacks they catch once it is left out
    f1_out = left_out.evaluation.pooled["rows"]["f1"]
    f1_in = pooled_in.evaluation.pooled["rows"]["f1"]
    assert f1_out > f1_in + 0.5, (f1_out, f1_in)
    for device in left_out.evaluation.devices:
        assert (left_out.evaluation.devices[device]["rows"]["f1"]
                >= pooled_in.evaluation.devices[device]["rows"]["f1"])


@pytest.mark.parametrize("value", [-1, 1.5, "two"])
def test_the_setting_is_checked(value: object) -> None:
    from fediot.core.config import ConfigError

    with pytest.raises(ConfigError, match=r"train_args\.stale_after_missed_rounds"):
        config(**{"train_args.stale_after_missed_rounds": value})


def test_a_threshold_step_with_every_device_left_out_is_one_clear_error() -> None:
    from fediot.core.errors import FediotError
    from fediot.core.federated.messages import ModelState

    clients = synthetic_clients()
    server = FedDetectServer(config())
    pool = SequentialPool(clients)
    model = ModelState(server.initial_weights(), server.fit_scaler(pool))
    why = dict.fromkeys(pool.client_ids, "no reply to its last training round (round 1)")
    with pytest.raises(FediotError, match=r"threshold step: every device is left out \("
                                          r".*stale_after_missed_rounds"):
        server.calibrate(pool, model, excluded=why)
