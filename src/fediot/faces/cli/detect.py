"""``fediot detect``: a capture file or a live interface → EVE-style JSON alert lines.

Packets go through the streaming feature extractor, a run's detector and N-BaIoT's window vote
per device (:class:`fediot.core.detection.StreamingDetector`); each verdict worth reporting is
one JSON line (Suricata EVE conventions, :func:`fediot.core.detection.eve_record`) on stdout or
appended to ``--output``, so a SIEM can tail it. The summary table goes to stderr, which keeps
stdout pure JSON lines.

Which device a packet belongs to: ``--device NAME`` (the whole capture is that device's traffic,
N-BaIoT's port-mirror setting), ``--devices FILE`` (a JSON/YAML mapping of MAC or IP address to
device name; source address first, then destination), or neither (every packet is device
``unknown``, judged with the run's global threshold). Device names are N-BaIoT folder names
(any case) or the run's client ids; the run must have a threshold for each.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Annotated, TextIO

import numpy as np
import torch
import typer
from rich.table import Table

from fediot.core.catalog import client_label
from fediot.core.config import Config
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
from fediot.core.features.pcap import read_capture
from fediot.engines.capture import LiveCapture
from fediot.engines.run_folder import RunView, find_run
from fediot.faces.cli.app import app, err_console, fail

DEFAULT_RUNS_DIR = Path(Config().tracking_args.log_file_dir)


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


def _detector(view: RunView, window: int | None, device: str | None,
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


def _summary(source: str, view: RunView, detector: StreamingDetector, writer: EveWriter,
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


def _detect_file(capture: Path, detector: StreamingDetector, writer: EveWriter, *,
                 batch: int, count: int | None, all_packets: bool,
                 allow_truncated: bool) -> list[str]:
    result = read_capture(capture, allow_truncated=allow_truncated)
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


def _detect_live(interface: str, detector: StreamingDetector, writer: EveWriter, *,
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


def _open_output(output: Path | None) -> TextIO:
    if output is None:
        return sys.stdout
    try:
        return output.open("a", encoding="utf-8", buffering=1)
    except OSError as error:
        raise FediotError(f"{output}: cannot open for appending ({error.strerror})") from None


@app.command()
def detect(
    capture: Annotated[Path | None, typer.Argument(
        help="pcap or pcapng file (or use --interface)", show_default=False)] = None,
    run: Annotated[str, typer.Option(
        help="the run whose model judges: folder, id, unique id prefix or 'latest'")] = "latest",
    runs_dir: Annotated[Path, typer.Option(help="where run folders are")] = DEFAULT_RUNS_DIR,
    interface: Annotated[str | None, typer.Option(
        "--interface", "-i", help="capture live on this interface (Linux, root/CAP_NET_RAW)",
        show_default=False)] = None,
    device: Annotated[str | None, typer.Option(
        help="all traffic is this device's (N-BaIoT name or the run's client id)",
        show_default=False)] = None,
    devices: Annotated[Path | None, typer.Option(
        help="JSON/YAML mapping of MAC or IP address → device name", show_default=False)] = None,
    all_packets: Annotated[bool, typer.Option(
        "--all", help="a line for every packet's verdict, not only alerts")] = False,
    every: Annotated[int, typer.Option(
        min=1, help="rate limit: one alert line in N per device (the line counts the "
                    "suppressed ones)")] = 1,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="append the JSON lines to this file instead of stdout",
        show_default=False)] = None,
    count: Annotated[int | None, typer.Option(
        min=1, help="stop after N packets", show_default=False)] = None,
    seconds: Annotated[float | None, typer.Option(
        min=0, help="live: stop after S seconds", show_default=False)] = None,
    window: Annotated[int | None, typer.Option(
        min=1, help="packets per majority vote (default: the run's window, or each "
                    "device's own when the run chose them)",
        show_default=False)] = None,
    batch: Annotated[int, typer.Option(
        min=1, help="file: packets scored per batch")] = 4096,
    live_batch: Annotated[int, typer.Option(
        min=1, help="live: packets already queued that are scored together (a quiet link "
                    "is scored packet by packet, a flood in batches that keep up)")] = 256,
    first_jitter: Annotated[str, typer.Option(
        help="'epoch' (N-BaIoT) or 'zero'; must match the run's training data")] = "epoch",
    allow_truncated: Annotated[bool, typer.Option(
        help="file: keep the packets before a truncated final record")] = False,
    settle: Annotated[float | None, typer.Option(
        min=0, help="hold back alerts for the first S seconds, while every source is new to "
                    "the extractor (default: the run's data_args.warmup_settle_seconds; 0: "
                    "none)", show_default=False)] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, help="torch threads for scoring (default: 1 live, where a one-row model call "
                    "only loses time to thread hand-offs; torch's default for files)",
        show_default=False)] = None,
) -> None:
    """Judge CAPTURE's packets (or live traffic on --interface) with a run's model; write an
    EVE-style JSON line per alert (window vote says attack) to stdout or --output, then a
    summary table on stderr."""
    if (capture is None) == (interface is None):
        raise fail("give either a capture file or --interface, not both or neither")
    if device is not None and devices is not None:
        raise fail("give --device or --devices, not both")
    if seconds is not None and interface is None:
        raise fail("--seconds applies to live capture (--interface) only; use --count")
    stream: TextIO | None = None
    threads_before = torch.get_num_threads()
    if threads is not None or interface is not None:
        torch.set_num_threads(threads or 1)
    try:
        view = find_run(run, runs_dir, needs_model=True)
        detector = _detector(view, window, device, devices, first_jitter, settle)
        stream = _open_output(output)
        writer = EveWriter(stream, view, interface, every)
        started = time.perf_counter()  # the rate counts detection, not loading the model
        try:
            if capture is not None:
                notes = _detect_file(capture, detector, writer, batch=batch, count=count,
                                     all_packets=all_packets, allow_truncated=allow_truncated)
            else:
                assert interface is not None
                notes = _detect_live(interface, detector, writer, count=count,
                                     seconds=seconds, all_packets=all_packets,
                                     live_batch=live_batch)
        except BrokenPipeError:
            # the reader of stdout went away (e.g. `| head`): stop quietly
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            notes = ["output closed by its reader"]
    except FediotError as error:
        raise fail(str(error)) from None
    finally:
        torch.set_num_threads(threads_before)
        if stream is not None and stream is not sys.stdout:
            stream.close()
    elapsed = time.perf_counter() - started
    source = str(capture) if capture is not None else f"interface {interface}"
    err_console.print(_summary(source, view, detector, writer, elapsed, notes))
