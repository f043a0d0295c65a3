"""``fediot detect``: a capture file or a live interface → EVE-style JSON alert lines.

Packets go through the streaming feature extractor, a run's detector and N-BaIoT's window vote
per device (:class:`fediot.core.detection.StreamingDetector`); each verdict worth reporting is
one JSON line (Suricata EVE conventions, :func:`fediot.core.detection.eve_record`) on stdout or
appended to ``--output``, so a SIEM can tail it. The summary table goes to stderr, which keeps
stdout pure JSON lines. The run is found and the capture file read (a bad one refused) before
the run's model, torch and the compiled extractor are loaded (:mod:`.detect_stream`).

Which device a packet belongs to: ``--device NAME`` (the whole capture is that device's traffic,
N-BaIoT's port-mirror setting), ``--devices FILE`` (a JSON/YAML mapping of MAC or IP address to
device name; source address first, then destination), or neither (every packet is device
``unknown``, judged with the run's global threshold). Device names are N-BaIoT folder names
(any case) or the run's client ids; the run must have a threshold for each.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Annotated, TextIO

import typer

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.features.pcap import CaptureReadResult, read_capture
from fediot.core.limits import MAX_WINDOW
from fediot.faces.cli.app import app, err_console, fail
from fediot.faces.cli.extract import FirstJitterOption
from fediot.faces.cli.lazy import command

DEFAULT_RUNS_DIR = Path(Config().tracking_args.log_file_dir)


@command(app, "detect")
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
        min=1, max=MAX_WINDOW, help="packets per majority vote (default: the run's window, or each "
                    "device's own when the run chose them)",
        show_default=False)] = None,
    batch: Annotated[int, typer.Option(
        min=1, help="file: packets scored per batch")] = 4096,
    live_batch: Annotated[int, typer.Option(
        min=1, help="live: packets already queued that are scored together (a quiet link "
                    "is scored packet by packet, a flood in batches that keep up)")] = 256,
    first_jitter: FirstJitterOption = "epoch",
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
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    if (capture is None) == (interface is None):
        raise fail("give either a capture file or --interface, not both or neither")
    if device is not None and devices is not None:
        raise fail("give --device or --devices, not both")
    if seconds is not None and interface is None:
        raise fail("--seconds applies to live capture (--interface) only; use --count")
    from fediot.engines.run_folder import find_run

    packets: CaptureReadResult | None = None
    try:  # the run and the capture first: a bad one is refused before torch loads
        view = find_run(run, runs_dir, needs_model=True)
        if capture is not None:
            packets = read_capture(capture, allow_truncated=allow_truncated)
    except FediotError as error:
        raise fail(str(error)) from None
    import torch

    from fediot.faces.cli import detect_stream

    stream: TextIO | None = None
    threads_before = torch.get_num_threads()
    if threads is not None or interface is not None:
        torch.set_num_threads(threads or 1)
    try:
        detector = detect_stream.build_detector(view, window, device, devices, first_jitter,
                                                settle)
        stream = detect_stream.open_output(output)
        writer = detect_stream.EveWriter(stream, view, interface, every)
        started = time.perf_counter()  # the rate counts detection, not loading the model
        try:
            if packets is not None:
                notes = detect_stream.detect_file(packets, detector, writer, batch=batch,
                                                  count=count, all_packets=all_packets)
            else:
                assert interface is not None
                notes = detect_stream.detect_live(interface, detector, writer, count=count,
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
    err_console.print(detect_stream.summary_table(source, view, detector, writer, elapsed, notes))
