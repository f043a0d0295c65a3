"""``fediot detect``'s model side: a run's streaming detector → EVE-style JSON alert lines.

Imported by :mod:`fediot.faces.cli.detect` (which describes the command) once the command's
input is checked: it loads torch and the compiled extractor. Packets go through the streaming
feature extractor, the run's detector and N-BaIoT's window vote per device
(:class:`fediot.core.detection.StreamingDetector`); :class:`EveWriter` writes each verdict worth
reporting as one JSON line (:func:`fediot.core.detection.eve_record`).
"""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TextIO

import numpy as np
from rich.table import Table

from fediot.core.catalog import client_label
from fediot.core.detection import (
    UNKNOWN_DEVICE,
    DeviceMap,
    Scorer,
    StreamingDetector,
    Verdict,
    eve_record,
    resolve_device,
)
from fediot.core.errors import FediotError
from fediot.core.features.extractor import ExtractorOptions, FeatureExtractor
from fediot.core.features.packets import KIND_IPV4, Packet, PacketTable
from fediot.core.features.pcap import CaptureReadResult
from fediot.engines.capture import LiveCapture
from fediot.engines.run_folder import RunView


class EveWriter:
    """Writes verdicts as JSON lines, rate-limited per device.

    Parameters
    ----------
    stream
        Where lines go (stdout, or a file opened for appending, line-buffered).
    run, interface
        The run (id and model version go in every line) and the live interface, if any.
    every
        Write one alert line in ``every`` per device (the first, then every ``every``-th);
        the written line's ``suppressed`` counts the alerts folded into it. 1 = every alert.
    """

    def __init__(self, stream: TextIO, run: RunView, interface: str | None,
                 every: int = 1) -> None:
        self.stream = stream
        self.run_id = run.run_id
        self.model_version = run.model_version()
        self.interface = interface
        self.every = every
        self.lines = 0
        self.lines_per_device: Counter[str] = Counter()
        self._alerts_seen: Counter[str] = Counter()
        self._suppressed: Counter[str] = Counter()

    @property
    def suppressed(self) -> int:
        """Alerts not written (rate limiting), not yet reported in a later line."""
        return sum(self._suppressed.values())

    def write(self, verdicts: list[Verdict]) -> None:
        lines = []
        for verdict in verdicts:
            suppressed = 0
            if verdict.attack and self.every > 1:
                device = verdict.device
                self._alerts_seen[device] += 1
                if (self._alerts_seen[device] - 1) % self.every:
                    self._suppressed[device] += 1
                    continue
                suppressed = self._suppressed.pop(device, 0)
            record = eve_record(verdict, run_id=self.run_id, model_version=self.model_version,
                                interface=self.interface, suppressed=suppressed)
            lines.append(json.dumps(record, separators=(",", ":")))
            self.lines_per_device[verdict.device] += 1
        if lines:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
            self.lines += len(lines)


def build_detector(view: RunView, window: int | None, device: str | None,
              devices: Path | None, first_jitter: str,
              settle: float | None = None) -> StreamingDetector:
    """The streaming detector of run ``view``, with its per-device thresholds."""
    _, thresholds = view.load_model()
    known = set(thresholds.per_device)
    cache: dict[str, Scorer] = {}

    def detector_for(name: str) -> Scorer:
        if name not in cache:
            cache[name] = view.detector(None if name == UNKNOWN_DEVICE else name)
        return cache[name]

    device_of: Callable[[Packet], str | None] | None = None
    expected = {UNKNOWN_DEVICE}
    if device is not None:
        fixed = resolve_device(device, known)
        device_of = lambda packet: fixed  # noqa: E731  (the whole capture is one device)
        expected = {fixed}
    elif devices is not None:
        mapping = DeviceMap.load(devices).resolved(known)
        device_of = mapping
        expected |= mapping.devices
    config = view.config()
    fixed_window = window if window is not None else config.detection_args.window
    # unattributed packets vote over the largest device window
    votes = thresholds.window(None, fixed_window)
    windows = {name: thresholds.window(name, fixed_window) for name in known}
    rule = config.data_args.warmup_rule()
    if settle is not None:
        rule = replace(rule, settle_seconds=settle)
    extractor = FeatureExtractor(ExtractorOptions(first_jitter=first_jitter))
    streaming = StreamingDetector(detector_for, votes, device_of, extractor=extractor,
                                  warmup=rule, windows=windows)
    for name in sorted(expected):  # load now: no model loading on a live packet's path
        streaming.scorer(name)
    return streaming


def summary_table(source: str, view: RunView, detector: StreamingDetector, writer: EveWriter,
             seconds: float, notes: list[str]) -> Table:
    table = Table(title=f"fediot detect: {source} with run {view.run_id}", title_justify="left")
    for name in ("device", "packets", "anomalous", "alerts", "lines"):
        table.add_column(name, justify="left" if name == "device" else "right")
    for device, packets in sorted(detector.packets_per_device.items()):
        table.add_row(client_label(device), f"{packets:,}",
                      f"{detector.anomalous_per_device[device]:,}",
                      f"{detector.alerts_per_device[device]:,}",
                      f"{writer.lines_per_device[device]:,}")
    table.add_row("all", f"{detector.packets_seen:,}",
                  f"{sum(detector.anomalous_per_device.values()):,}",
                  f"{sum(detector.alerts_per_device.values()):,}", f"{writer.lines:,}",
                  style="bold")
    rate = detector.packets_seen / seconds if seconds > 0 else 0.0
    used = sorted({detector.windows.get(device, detector.window)
                   for device in detector.packets_per_device})
    caption = [f"{rate:,.0f} packets/s over {seconds:.2f} s",
               f"window {', '.join(map(str, used)) or detector.window}", *notes]
    if writer.suppressed:
        caption.append(f"{writer.suppressed:,} alerts suppressed by --every")
    settling = sum(detector.settling_per_device.values())
    if settling:
        caption.append(f"alerts held back for the first {settling:,} packets (the first "
                       f"{detector.warmup.settle_seconds:g} s, while every source was new)")
    table.caption = "; ".join(caption)
    return table


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@contextmanager
def _stoppable() -> Iterator[None]:
    """Ctrl-C (SIGINT) and SIGTERM end detection cleanly, with the summary, even when this
    process was started with SIGINT ignored (as a shell's background job is) or under a
    service manager that stops with SIGTERM."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    previous = {number: signal.signal(number, _raise_interrupt)
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)


def detect_file(result: CaptureReadResult, detector: StreamingDetector, writer: EveWriter, *,
                batch: int, count: int | None, all_packets: bool) -> list[str]:
    """Judge a capture file's packets (already read) in batches; notes for the summary."""
    packets = result.packets
    if count is not None:
        packets = packets.take(slice(0, count))
    notes = [result.summary()]
    try:
        with _stoppable():
            for start in range(0, len(packets), batch):
                chunk = packets.take(slice(start, start + batch))
                writer.write(detector.process(chunk, alerts_only=not all_packets))
    except KeyboardInterrupt:
        notes.append("stopped by Ctrl-C")
    return notes


def _warm_up(detector: StreamingDetector, devices: list[str]) -> None:
    """Load the compiled extractor and run each model once, off the first packet's path."""
    probe = Packet(0.0, 60, 1, 2, "192.0.2.1", "192.0.2.2", 1024, 80, KIND_IPV4, 6)
    row = FeatureExtractor(detector.extractor.options).update_packet(probe)
    for device in devices:
        detector.scorer(device).score_samples(row[np.newaxis])


def detect_live(interface: str, detector: StreamingDetector, writer: EveWriter, *,
                 count: int | None, seconds: float | None, all_packets: bool,
                 live_batch: int) -> list[str]:
    stopped = []
    _warm_up(detector, detector.devices)
    with LiveCapture(interface) as capture:
        try:
            with _stoppable():
                for batch in capture.batches(count=count, seconds=seconds,
                                             max_batch=live_batch):
                    if len(batch) == 1:
                        verdicts = [detector.update(batch[0])]  # the scalar fast path
                    else:
                        verdicts = detector.process(PacketTable.from_packets(batch))
                    writer.write([v for v in verdicts if all_packets or v.attack])
        except KeyboardInterrupt:
            stopped.append("stopped by Ctrl-C")
    notes = [f"{capture.frames:,} frames on {interface}"]
    if capture.dropped:
        notes.append(f"{capture.dropped:,} dropped by the kernel (the detector fell behind)")
    if capture.skipped:
        reasons = ", ".join(f"{r} ×{n}" for r, n in capture.skip_reasons.items())
        notes.append(f"{capture.skipped:,} skipped ({reasons})")
    return notes + stopped


def open_output(output: Path | None) -> TextIO:
    if output is None:
        return sys.stdout
    try:
        return output.open("a", encoding="utf-8", buffering=1)
    except OSError as error:
        raise FediotError(f"{output}: cannot open for appending ({error.strerror})") from None
