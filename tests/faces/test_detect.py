"""``fediot detect``: a real run judging the real camera capture, a SYN flood, live loopback
traffic, and bad inputs."""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import dpkt
import numpy as np
import pytest
from typer.testing import CliRunner

from federated_data import small_run_config, write_uci_dataset
from fediot.core.detection import WINDOW_VOTE_SIGNATURE_ID
from fediot.core.features.extractor import extract_features
from fediot.core.features.packets import KIND_IPV4, KIND_OTHER
from fediot.core.features.pcap import read_capture
from fediot.core.io import write_features
from fediot.core.metrics.window import window_vote
from fediot.engines.capture import LiveCapture
from fediot.engines.run_folder import RunView, find_run
from fediot.engines.simulation import simulate
from fediot.faces.cli import main  # noqa: F401  (registers every command)
from fediot.faces.cli.app import app, console, err_console

CAMERA_IP = "192.168.2.108"
CAMERA_MAC = "5c:cf:7f:05:f2:c6"
ATTACKER_IP = "10.66.66.66"
FLOOD = 3000
WINDOW = 5
_RUNS: dict[str, Path] = {}


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.setattr(err_console, "width", 5000)


@pytest.fixture
def runs_dir(real_pcap: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 2-round federated run on a small N-BaIoT-format dataset whose Danmini doorbell
    benign traffic is the real camera capture's features, with per-device thresholds (built
    once per session)."""
    if str(real_pcap) not in _RUNS:
        base = tmp_path_factory.mktemp("detect")
        dataset = write_uci_dataset(base / "nbaiot", n_devices=3)
        camera = extract_features(read_capture(real_pcap).packets)
        write_features(dataset / "Danmini_Doorbell" / "benign_traffic.csv", camera)
        simulate(small_run_config(dataset, base / "runs", **{
            "train_args.learning_rate": 0.003, "detection_args.window": WINDOW,
            "detection_args.threshold_mode": "per_device", "tracking_args.run_name": "cam",
        }))
        _RUNS[str(real_pcap)] = base / "runs"
    return _RUNS[str(real_pcap)]


@pytest.fixture
def flood_pcap(real_pcap: Path, tmp_path: Path) -> Path:
    """The real capture's records byte for byte, then a SYN flood: 3,000 SYNs from one host
    to the camera's ports 1…3,000, one every 100 µs, half a second after the last packet."""
    data = real_pcap.read_bytes()
    assert data[:4] == b"\xd4\xc3\xb2\xa1"  # little-endian, microseconds
    last = read_capture(real_pcap).packets.timestamp[-1]
    records = bytearray()
    for i in range(FLOOD):
        syn = dpkt.tcp.TCP(sport=40_000 + i % 20_000, dport=1 + i, flags=dpkt.tcp.TH_SYN, seq=i)
        ip = dpkt.ip.IP(src=socket.inet_aton(ATTACKER_IP), dst=socket.inet_aton(CAMERA_IP),
                        p=dpkt.ip.IP_PROTO_TCP, data=syn)
        ip.len = len(ip)
        frame = bytes(dpkt.ethernet.Ethernet(
            src=bytes.fromhex("026666666666"), dst=bytes.fromhex(CAMERA_MAC.replace(":", "")),
            type=dpkt.ethernet.ETH_TYPE_IP, data=ip))
        micros = round((last + 0.5 + i * 1e-4) * 1e6)
        records += struct.pack("<IIII", micros // 10**6, micros % 10**6, len(frame), len(frame))
        records += frame
    path = tmp_path / "flood.pcap"
    path.write_bytes(data + bytes(records))
    return path


def detect(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["detect", *args])
    return result.exit_code, result.stdout, result.stderr


def lines_of(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines()]


def test_every_packet_of_the_real_capture(real_pcap: Path, runs_dir: Path,
                                          tmp_path: Path) -> None:
    out = tmp_path / "eve.json"
    # the capture spans 71 s: hold alerts back for its first 20 (the run's default is 100)
    code, stdout, stderr = detect(str(real_pcap), "--run", "cam", "--runs-dir", str(runs_dir),
                                  "--device", "danmini_doorbell", "--all", "--output", str(out),
                                  "--settle", "20")
    assert code == 0, stderr
    assert "alerts held back for the first" in stderr
    assert stdout == ""  # the lines went to the file, the summary to stderr
    assert "2,000" in stderr and "packets/s" in stderr
    records = lines_of(out.read_text())
    assert len(records) == 2000
    view = RunView(runs_dir / "cam")
    packets = read_capture(real_pcap).packets
    for record, kind in zip(records, packets.kind.tolist(), strict=True):
        assert {"timestamp", "event_type", "ether", "fediot"} <= record.keys()
        if kind != KIND_OTHER:  # frames without IP or ARP have no addresses to give
            assert {"src_ip", "dest_ip", "proto"} <= record.keys()
        assert record["fediot"]["device"] == "Danmini_Doorbell"
        assert record["fediot"]["run"] == "cam"
        assert record["fediot"]["model_version"] == view.model_version()
        assert record["fediot"]["window_vote"]["window"] == WINDOW
    assert [r["fediot"]["packet"] for r in records] == list(range(2000))
    assert records[0]["timestamp"].endswith("+0000") and "." in records[0]["timestamp"]

    # scores: the run's detector on the batch-extracted features of the same capture
    detector = view.detector("Danmini_Doorbell")
    expected = detector.score_samples(extract_features(packets))
    scores = np.array([r["fediot"]["score"] for r in records])
    np.testing.assert_array_equal(scores, expected)
    assert {r["fediot"]["threshold"] for r in records} == {detector.threshold_}
    # verdicts: the core window vote over the per-packet flags
    flags = scores > detector.threshold_
    assert [r["fediot"]["score_above_threshold"] for r in records] == flags.tolist()
    # alerts are held back while the extractor settles (the run's warm-up settle time)
    settling = packets.timestamp - packets.timestamp[0] < 20
    assert 0 < settling.sum() < 2000
    assert [r["fediot"].get("settling", False) for r in records] == settling.tolist()
    voted = window_vote(flags, WINDOW)
    attack = voted & ~settling
    assert [r["fediot"]["window_vote"]["attack"] for r in records] == attack.tolist()
    assert [r["event_type"] == "alert" for r in records] == attack.tolist()
    votes = [(r["fediot"]["window_vote"]["above_threshold"],
              r["fediot"]["window_vote"]["packets"])
             for r in records]
    assert [2 * a > n for a, n in votes] == voted.tolist()
    assert attack.mean() < 0.01  # benign traffic the model was trained on: few alerts

    # --output appends
    detect(str(real_pcap), "--run", "cam", "--runs-dir", str(runs_dir),
           "--device", "Danmini_Doorbell", "--all", "--output", str(out), "--count", "10")
    assert len(out.read_text().splitlines()) == 2010


def test_a_syn_flood_raises_alerts_naming_it(flood_pcap: Path, runs_dir: Path) -> None:
    # the flood starts 71 s into the capture: no settling here (tested above)
    code, stdout, stderr = detect(str(flood_pcap), "--run", "latest", "--runs-dir",
                                  str(runs_dir), "--device", "Danmini_Doorbell", "--settle", "0")
    assert code == 0, stderr
    alerts = lines_of(stdout)  # stdout holds JSON lines and nothing else
    assert all(a["event_type"] == "alert" and a["fediot"]["window_vote"]["attack"]
               and a["alert"]["signature_id"] == WINDOW_VOTE_SIGNATURE_ID for a in alerts)
    in_flood = [a for a in alerts if a["fediot"]["packet"] >= 2000]
    assert len(in_flood) > 0.9 * FLOOD
    assert len(alerts) - len(in_flood) < 0.01 * 2000
    for alert in in_flood:
        assert (alert["src_ip"], alert["dest_ip"], alert["proto"]) == (
            ATTACKER_IP, CAMERA_IP, "TCP")
        assert alert["dest_port"] == alert["fediot"]["packet"] - 2000 + 1
        assert alert["ether"]["dest_mac"] == CAMERA_MAC
        assert alert["alert"]["action"] == "allowed"
    assert f"{len(alerts):,}" in stderr

    # rate limiting: one line per 100 alerts, each counting the alerts folded into it
    code, stdout, stderr = detect(str(flood_pcap), "--run", "cam", "--runs-dir",
                                  str(runs_dir), "--device", "Danmini_Doorbell",
                                  "--every", "100", "--settle", "0")
    assert code == 0, stderr
    limited = lines_of(stdout)
    assert len(limited) == math.ceil(len(alerts) / 100)
    assert [a.get("fediot", {}).get("suppressed", 0) for a in limited] == [0] + [99] * (
        len(limited) - 1)
    assert [a["fediot"]["packet"] for a in limited] == [
        a["fediot"]["packet"] for a in alerts[::100]]
    assert "suppressed by --every" in stderr


def test_a_device_map_attributes_packets(flood_pcap: Path, runs_dir: Path,
                                         tmp_path: Path) -> None:
    mapping = tmp_path / "devices.yaml"
    mapping.write_text(f"{CAMERA_MAC}: danmini_doorbell\n{ATTACKER_IP}: Ecobee_Thermostat\n")
    code, stdout, stderr = detect(str(flood_pcap), "--run", "cam", "--runs-dir", str(runs_dir),
                                  "--devices", str(mapping), "--all", "--batch", "700",
                                  "--settle", "0")
    assert code == 0, stderr
    records = lines_of(stdout)
    assert len(records) == 2000 + FLOOD
    _, thresholds = find_run("cam", runs_dir).load_model()
    flood = records[2000:]
    assert {r["fediot"]["device"] for r in flood} == {"Ecobee_Thermostat"}  # source first
    assert {r["fediot"]["threshold"] for r in flood} == {
        thresholds.per_device["Ecobee_Thermostat"]}
    by_device: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        by_device.setdefault(record["fediot"]["device"], []).append(record)
    assert set(by_device) <= {"Danmini_Doorbell", "Ecobee_Thermostat", "unknown"}
    for device, mine in by_device.items():
        expected = (thresholds.global_threshold if device == "unknown"
                    else thresholds.per_device[device])
        assert {r["fediot"]["threshold"] for r in mine} == {expected}
        flags = np.array([r["fediot"]["score_above_threshold"] for r in mine])
        assert [r["event_type"] == "alert" for r in mine] == window_vote(flags, WINDOW).tolist()
    assert "Danmini doorbell" in stderr and "Ecobee thermostat" in stderr


@pytest.mark.parametrize(("make", "args", "message"), [
    (None, ["missing.pcap"], "missing.pcap: no such file"),
    (b"\xd4\xc3\xb2\xa1\x02\x00", ["short.pcap"], "short.pcap: corrupt pcap global header"),
    (None, ["CAPTURE", "--device", "Toaster"], "unknown device 'Toaster'"),
    (None, ["CAPTURE", "--device", "Provision_PT_737E_Security_Camera"],
     "the run has no threshold for it"),
    ("10.0.0.1: Toaster\n", ["CAPTURE", "--devices", "map.yaml"],
     "map.yaml: 10.0.0.1: unknown device 'Toaster'"),
    (None, ["--interface", "nosuchif0", "--count", "1"], "interface 'nosuchif0'"),
    (None, ["CAPTURE", "--interface", "lo"], "not both or neither"),
    (None, [], "not both or neither"),
    (None, ["CAPTURE", "--seconds", "3"], "--seconds applies to live capture"),
    (None, ["CAPTURE", "--run", "nope"], "no run 'nope'"),
])
def test_bad_inputs_give_one_line(
    real_pcap: Path, runs_dir: Path, tmp_path: Path, make: bytes | str | None,
    args: list[str], message: str,
) -> None:
    if isinstance(make, bytes):
        (tmp_path / args[0]).write_bytes(make)
    elif isinstance(make, str):
        (tmp_path / args[-1]).write_text(make)
    resolved = [str(real_pcap) if a == "CAPTURE" else
                str(tmp_path / a) if a.endswith((".pcap", ".yaml")) else a for a in args]
    if "--run" not in resolved:
        resolved += ["--run", "cam"]
    code, stdout, stderr = detect(*resolved, "--runs-dir", str(runs_dir))
    assert code == 2, stderr
    assert stdout == ""
    assert len(stderr.strip().splitlines()) == 1, stderr
    assert stderr.startswith("error:") and message in stderr, stderr


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _fediot(*args: str, sigint_ignored: bool = False) -> subprocess.Popen[str]:
    """``fediot ARGS`` in a subprocess; ``sigint_ignored`` starts it the way a shell starts a
    background job (SIGINT ignored), where Python installs no Ctrl-C handler of its own."""
    return subprocess.Popen([sys.executable, "-m", "fediot.faces.cli.main", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_ignore_sigint if sigint_ignored else None)


def _send_until_done(process: subprocess.Popen[str], port: int, stop: Path | None = None,
                     lines: int = 0, timeout: float = 600.0,
                     stop_signal: int = signal.SIGINT) -> None:
    """UDP datagrams to ``port`` on loopback every 5 ms until ``process`` exits (or, with
    ``stop``, until that file holds ``lines`` lines, then ``stop_signal``: Ctrl-C).
    ``timeout`` only guards against a hang: ``fediot detect`` took over 120 s to start
    while parallel test workers loaded the machine."""
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            sender.sendto(b"fediot live test", ("127.0.0.1", port))
            time.sleep(0.005)
            if stop is not None and stop.exists() and len(
                    stop.read_text().splitlines()) >= lines:
                process.send_signal(stop_signal)
                stop = None
    finally:
        sender.close()
        if process.poll() is None:
            process.kill()


@pytest.fixture
def udp_port() -> Any:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    yield receiver.getsockname()[1]
    receiver.close()


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="live capture needs root (or CAP_NET_RAW) for a raw AF_PACKET socket")


@pytest.mark.slow
@needs_root
def test_live_capture_on_loopback(runs_dir: Path, tmp_path: Path, udp_port: int) -> None:
    out = tmp_path / "live.json"
    process = _fediot("detect", "--interface", "lo", "--count", "40", "--run", "cam",
                      "--runs-dir", str(runs_dir), "--all", "--output", str(out))
    _send_until_done(process, udp_port)
    stdout, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stdout == ""
    records = lines_of(out.read_text())
    assert len(records) == 40
    assert all(r["in_iface"] == "lo" and r["fediot"]["device"] == "unknown" for r in records)
    ours = [r for r in records if r.get("dest_port") == udp_port]
    assert ours and all(r["src_ip"] == r["dest_ip"] == "127.0.0.1" for r in ours)
    assert [r["fediot"]["packet"] for r in records] == list(range(40))
    assert "interface lo" in stderr and "40" in stderr


@pytest.mark.slow
@needs_root
@pytest.mark.parametrize(("stop_signal", "sigint_ignored"), [
    (signal.SIGINT, False), (signal.SIGINT, True), (signal.SIGTERM, False)],
    ids=["ctrl-c", "ctrl-c-background-job", "sigterm"])
def test_live_capture_stops_cleanly_on_ctrl_c(runs_dir: Path, tmp_path: Path, udp_port: int,
                                              stop_signal: int, sigint_ignored: bool) -> None:
    out = tmp_path / "live.json"
    process = _fediot("detect", "--interface", "lo", "--run", "cam", "--runs-dir",
                      str(runs_dir), "--all", "--output", str(out),
                      sigint_ignored=sigint_ignored)
    _send_until_done(process, udp_port, stop=out, lines=5, stop_signal=stop_signal)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert "stopped by Ctrl-C" in stderr
    assert len(lines_of(out.read_text())) >= 5


@needs_root
def test_live_capture_drains_queued_packets_in_batches(udp_port: int) -> None:
    """Packets already queued come out together (a flood is scored in batches), each parsed
    as the capture reader would parse it."""
    with LiveCapture("lo") as capture:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(30):
                sender.sendto(b"x" * i, ("127.0.0.1", udp_port))
        finally:
            sender.close()
        batches = list(capture.batches(count=30, seconds=10, max_batch=256))
    packets = [p for batch in batches for p in batch]
    assert len(packets) == 30 and len(batches) < 30
    ours = [p for p in packets if p.dst_port == udp_port]
    assert ours, packets
    for packet in ours:
        assert (packet.src_ip, packet.dst_ip, packet.kind, packet.ip_proto) == (
            "127.0.0.1", "127.0.0.1", KIND_IPV4, 17)
    # Ethernet 14 + IPv4 20 + UDP 8 + i payload bytes, on the wire
    assert {p.frame_len for p in ours} <= {14 + 20 + 8 + i for i in range(30)}
    assert all(abs(p.timestamp - time.time()) < 60 for p in packets)


def test_a_window_beyond_the_largest_vote_is_refused_before_any_work(tmp_path: Path) -> None:
    from fediot.core.limits import MAX_WINDOW

    code, _, stderr = detect(str(tmp_path / "absent.pcap"), "--window", str(MAX_WINDOW + 1))
    assert code == 2
    assert "--window" in stderr and f"{MAX_WINDOW}" in stderr.replace(",", "")
