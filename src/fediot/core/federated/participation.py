"""Which devices answer: losses and rejoins, and devices too stale to set a threshold.

The server asks devices for one step at a time (:class:`FedDetectServer`); after each step it
knows who answered (accepted or rejected: the device is reachable either way) and who was asked
but stayed silent. :class:`DeviceContacts` turns those facts into log lines naming the device
when it is lost and when it answers again, for every engine alike (in-process, Ray, a real
deployment where a killed device restarts).

A device that was sampled for training rounds but answered none of its last N
(``train_args.stale_after_missed_rounds``) holds no evidence that the global model fits its
traffic, and its threshold-row errors can be large: fed into a global threshold they raise it
for every device. :func:`stale_devices` names them; the server keeps them out of the threshold
and evaluation steps and records why. Not being sampled is normal and never counts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from fediot.core.federated.messages import LogLine

if TYPE_CHECKING:
    from fediot.core.federated.server import RoundRecord


@dataclass(frozen=True)
class StepContact:
    """Who answered one exchange of one step.

    Parameters
    ----------
    step
        The client method (``scaler_stats``, ``fit``, ``threshold_stats``, ``evaluate``,
        ``secagg``).
    server_round
        The round the step belongs to; ``None`` outside rounds.
    answered
        Devices whose reply arrived (accepted or rejected), in the order asked.
    missing
        Devices asked that did not reply, in the order asked.
    """

    step: str
    server_round: int | None
    answered: tuple[str, ...]
    missing: tuple[str, ...]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _where(step: str, server_round: int | None) -> str:
    return f"{step} of round {server_round}" if server_round is not None else step


class DeviceContacts:
    """Tracks the devices whose last task went unanswered and reports changes as log lines.

    A device is *lost* from the first step it was asked and did not answer until the next step
    it answers (it *rejoined*). The lines carry the device's name, the step and round, as a
    device's own log lines do, so they land in the run folder's ``logs.jsonl``.
    """

    def __init__(self) -> None:
        self.lost: dict[str, tuple[str, int | None]] = {}
        """Device → the step and round it was first lost at, while it stays lost."""

    def update(self, contact: StepContact) -> list[LogLine]:
        """Record one exchange; the lines announcing the devices lost or rejoined by it."""
        lines: list[LogLine] = []
        for device in contact.missing:
            if device in self.lost:
                continue
            self.lost[device] = (contact.step, contact.server_round)
            lines.append(LogLine(
                _now(), device, contact.server_round, contact.step, "WARNING",
                f"lost: no reply to {_where(contact.step, contact.server_round)}; the step "
                f"goes on without it"))
        for device in contact.answered:
            since = self.lost.pop(device, None)
            if since is None:
                continue
            lines.append(LogLine(
                _now(), device, contact.server_round, contact.step, "INFO",
                f"rejoined: answered {_where(contact.step, contact.server_round)} (no reply "
                f"since {_where(*since)})"))
        return lines


def missed_rounds(history: Sequence[RoundRecord]) -> dict[str, list[tuple[int, bool]]]:
    """Device → ``(round, missed)`` for each round it was sampled for, in order: missed means
    it did not reply at all (a rejected reply is an answer: the device was there)."""
    sampled: dict[str, list[tuple[int, bool]]] = {}
    for record in history:
        replied = {*record.answered, *record.rejected}  # a set: thousands of devices a round
        for device in record.clients:
            sampled.setdefault(device, []).append((record.server_round, device not in replied))
    return sampled


def stale_devices(history: Sequence[RoundRecord], after_missed: int) -> dict[str, str]:
    """Device → why it is left out of the threshold and evaluation steps: it was sampled for
    at least ``after_missed`` training rounds and replied to none of the last ``after_missed``
    of them. ``after_missed`` 0 leaves no device out. A device that answers a later round it is
    sampled for is back in; one never sampled again stays out."""
    if after_missed <= 0:
        return {}
    stale: dict[str, str] = {}
    for device, outcomes in missed_rounds(history).items():
        last = outcomes[-after_missed:]
        if len(last) == after_missed and all(missed for _, missed in last):
            rounds = [r for r, _ in last]
            stale[device] = (
                f"no reply to its last training round (round {rounds[0]})" if after_missed == 1
                else f"no reply to its last {after_missed} training rounds (rounds "
                     f"{', '.join(map(str, rounds))})")
    return stale


def exclusion_lines(excluded: dict[str, str]) -> list[LogLine]:
    """One log line per device left out of the threshold and evaluation steps, with why."""
    return [LogLine(_now(), device, None, "threshold_stats", "WARNING",
                    f"left out of the threshold and evaluation steps: {why}")
            for device, why in excluded.items()]
