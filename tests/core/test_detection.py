"""The streaming detector: features → scores → per-device window votes, in any split, held to
the batch extractor, the detector's own scores and :func:`window_vote`."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from fediot.core.detection import (
    UNKNOWN_DEVICE,
    WINDOW_VOTE_SIGNATURE_ID,
    DetectionError,
    DeviceMap,
    StreamingDetector,
    Verdict,
    eve_record,
    eve_timestamp,
    resolve_device,
)
from fediot.core.errors import FediotError
from fediot.core.features.extractor import FeatureExtractor, extract_features
from fediot.core.features.packets import (
    IP_PROTO_TCP,
    KIND_ARP,
    KIND_IPV4,
    KIND_OTHER,
    PORT_ARP,
    PORT_NONE,
    Packet,
    PacketTable,
    mac_to_int,
)
from fediot.core.features.pcap import read_capture
from fediot.core.features.warmup import WarmupRule
from fediot.core.metrics.window import window_vote
from fediot.core.model import AutoencoderDetector

CAMERA = "192.168.2.108"
CAMERA_MAC = "5c:cf:7f:05:f2:c6"


@functools.cache
def _camera(path: Path) -> tuple[PacketTable, np.ndarray, AutoencoderDetector]:
    """The camera capture, its features, and a detector trained on the first half of them
    with its threshold at the median error of the second half, so about half the packets
    are anomalous and the votes have work to do (computed once per session)."""
    packets = read_capture(path).packets
    features = extract_features(packets)
    half = len(features) // 2
    fitted = AutoencoderDetector(epochs=2, threshold_quantile=0.5, seed=1)
    return packets, features, fitted.fit(features[:half], features[half:])


@pytest.fixture
def capture(real_pcap: Path) -> PacketTable:
    return _camera(real_pcap)[0]


@pytest.fixture
def features(real_pcap: Path) -> np.ndarray:
    return _camera(real_pcap)[1]


@pytest.fixture
def detector(real_pcap: Path) -> AutoencoderDetector:
    return _camera(real_pcap)[2]


def by_device(
    detector: AutoencoderDetector, thresholds: dict[str, float]
) -> Callable[[str], AutoencoderDetector]:
    """Each device: the same model, its own threshold (as a run's per-device thresholds)."""

    def make(device: str) -> AutoencoderDetector:
        copy = AutoencoderDetector.from_components(
            detector.scaler_, [p.detach().numpy() for p in detector.model_.parameters()],
            thresholds.get(device, detector.threshold_), seed=1)
        return copy

    return make


def run_in_parts(streaming: StreamingDetector, table: PacketTable, size: int) -> list[Verdict]:
    verdicts: list[Verdict] = []
    for start in range(0, len(table), size):
        verdicts += streaming.process(table.take(slice(start, start + size)))
    return verdicts


def test_scores_and_votes_match_the_batch_pieces(
    capture: PacketTable, features: np.ndarray, detector: AutoencoderDetector
) -> None:
    window = 7
    verdicts = StreamingDetector(lambda device: detector, window, warmup=None).process(capture)
    scores = np.array([v.score for v in verdicts])
    np.testing.assert_array_equal(scores, detector.score_samples(features))
    flags = scores > detector.threshold_
    assert 0.2 < flags.mean() < 0.8
    assert [v.anomalous for v in verdicts] == flags.tolist()
    assert [v.attack for v in verdicts] == window_vote(flags, window).tolist()
    votes = np.array([v.votes for v in verdicts])
    voters = np.array([v.voters for v in verdicts])
    np.testing.assert_array_equal(voters, np.minimum(np.arange(1, len(flags) + 1), window))
    np.testing.assert_array_equal(2 * votes > voters, window_vote(flags, window))
    assert [v.index for v in verdicts] == list(range(len(capture)))
    assert {v.device for v in verdicts} == {UNKNOWN_DEVICE}
    assert all(v.threshold == detector.threshold_ and v.window == window for v in verdicts)
    assert list(capture.rows()) == [v.packet for v in verdicts]


@pytest.mark.parametrize("size", [1, 5, 333])
def test_any_split_gives_the_same_verdicts(
    capture: PacketTable, detector: AutoencoderDetector, size: int
) -> None:
    whole = StreamingDetector(lambda device: detector, 9, warmup=None).process(capture)
    parts = run_in_parts(StreamingDetector(lambda device: detector, 9, warmup=None), capture, size)
    key = [(v.anomalous, v.attack, v.votes, v.voters) for v in whole]
    assert [(v.anomalous, v.attack, v.votes, v.voters) for v in parts] == key
    # a model called on one row takes another BLAS path: equal to float32 rounding
    np.testing.assert_allclose([v.score for v in parts], [v.score for v in whole], rtol=1e-6)


def test_one_packet_at_a_time_equals_batches(
    capture: PacketTable, detector: AutoencoderDetector
) -> None:
    first = capture.take(slice(0, 600))
    batch = StreamingDetector(lambda device: detector, 5, warmup=None).process(first)
    live = StreamingDetector(lambda device: detector, 5, warmup=None)
    singles = [live.update(packet) for packet in first.rows()]
    np.testing.assert_allclose([v.score for v in singles], [v.score for v in batch], rtol=1e-6)
    flips = sum(a.anomalous != b.anomalous for a, b in zip(singles, batch, strict=True))
    assert flips == 0
    assert [v.attack for v in singles] == [v.attack for v in batch]
    assert live.packets_seen == 600 and live.extractor.packets_seen == 600


def test_votes_are_per_device(capture: PacketTable, detector: AutoencoderDetector) -> None:
    """Two devices by address: each one's verdicts are window_vote over its own flags."""
    mapping = DeviceMap({CAMERA_MAC: "Danmini_Doorbell", "52.24.43.67": "Ecobee_Thermostat"})
    thresholds = {"Danmini_Doorbell": detector.threshold_ * 1.1}
    window = 5
    streaming = StreamingDetector(by_device(detector, thresholds), window, mapping,
                                  warmup=None)
    verdicts = run_in_parts(streaming, capture, 250)
    devices = {v.device for v in verdicts}
    assert "Danmini_Doorbell" in devices
    for device in devices:
        mine = [v for v in verdicts if v.device == device]
        flags = np.array([v.score > v.threshold for v in mine])
        assert [v.anomalous for v in mine] == flags.tolist()
        assert [v.attack for v in mine] == window_vote(flags, window).tolist()
        assert streaming.packets_per_device[device] == len(mine)
        assert streaming.alerts_per_device[device] == sum(v.attack for v in mine)
    camera = [v for v in verdicts if v.device == "Danmini_Doorbell"]
    assert {v.threshold for v in camera} == {thresholds["Danmini_Doorbell"]}
    assert sum(streaming.packets_per_device.values()) == len(capture)


def test_alerts_only_keeps_just_the_attacks(
    capture: PacketTable, detector: AutoencoderDetector
) -> None:
    every = StreamingDetector(lambda device: detector, 3, warmup=None).process(capture)
    alerts = StreamingDetector(lambda device: detector, 3, warmup=None).process(
        capture, alerts_only=True)
    assert alerts == [v for v in every if v.attack]
    assert alerts


def test_bad_detector_inputs_are_named(detector: AutoencoderDetector) -> None:
    with pytest.raises(DetectionError, match="window of 'window' must be a positive integer"):
        StreamingDetector(lambda device: detector, 0)
    with pytest.raises(DetectionError, match="window of 'Ecobee_Thermostat' must be"):
        StreamingDetector(lambda device: detector, 3, windows={"Ecobee_Thermostat": 0})
    streaming = StreamingDetector({"Danmini_Doorbell": detector}, 3)
    with pytest.raises(DetectionError, match="no detector for device 'unknown'"):
        streaming.scorer(UNKNOWN_DEVICE)
    unfitted = StreamingDetector(lambda device: AutoencoderDetector(), 3)
    with pytest.raises(DetectionError, match="has no threshold_"):
        unfitted.scorer("x")
    with pytest.raises(DetectionError, match=r"shape \(2, 115\)"):
        streaming.judge(np.zeros((1, 115)), [packet(), packet()])


def packet(**fields: object) -> Packet:
    values: dict[str, object] = {
        "timestamp": 1_700_000_000.25, "frame_len": 60, "src_mac": mac_to_int(CAMERA_MAC),
        "dst_mac": 2, "src_ip": CAMERA, "dst_ip": "10.0.0.9", "src_port": 4000,
        "dst_port": 80, "kind": KIND_IPV4, "ip_proto": IP_PROTO_TCP}
    values.update(fields)
    return Packet(**values)  # type: ignore[arg-type]


def test_device_map_prefers_the_source_and_canonical_addresses() -> None:
    mapping = DeviceMap({
        CAMERA_MAC.upper(): "cam", CAMERA: "cam-ip", "10.0.0.9": "server",
        "2001:db8:0:0::1": "v6", "02-00-00-00-00-07": "dashed"})
    assert mapping(packet()) == "cam"  # source MAC first
    assert mapping(packet(src_mac=9)) == "cam-ip"  # then source IP
    dashed = mac_to_int("02:00:00:00:00:07")
    assert mapping(packet(src_mac=9, src_ip="1.1.1.1", dst_mac=dashed)) == "dashed"  # dest MAC
    assert mapping(packet(src_mac=9, src_ip="1.1.1.1")) == "server"  # then destination IP
    assert mapping(packet(src_mac=9, src_ip="1.1.1.1", dst_ip="2001:db8::1")) == "v6"
    assert mapping(packet(src_mac=9, src_ip="1.1.1.1", dst_ip="8.8.8.8")) is None
    assert mapping.devices == {"cam", "cam-ip", "server", "v6", "dashed"}


def test_device_map_errors_name_the_key_and_file(tmp_path: Path) -> None:
    with pytest.raises(DetectionError, match="'camera' is neither a MAC nor an IP"):
        DeviceMap({"camera": "Danmini_Doorbell"})
    with pytest.raises(DetectionError, match="no addresses"):
        DeviceMap({})
    missing = tmp_path / "nope.yaml"
    with pytest.raises(DetectionError, match=f"{missing}: no such file"):
        DeviceMap.load(missing)
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DetectionError, match=r"broken\.json: not valid JSON/YAML"):
        DeviceMap.load(broken)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 10.0.0.1\n")
    with pytest.raises(DetectionError, match="expected a mapping"):
        DeviceMap.load(listed)
    good = tmp_path / "devices.yaml"
    good.write_text(f"{CAMERA_MAC}: danmini_doorbell\n10.0.0.9: Toaster\n")
    loaded = DeviceMap.load(good)
    with pytest.raises(DetectionError, match=r"devices.yaml: 10.0.0.9: unknown device 'Toaster'"):
        loaded.resolved({"Danmini_Doorbell"})
    json_map = tmp_path / "devices.json"
    json_map.write_text(json.dumps({CAMERA_MAC: "danmini_doorbell"}))
    resolved = DeviceMap.load(json_map).resolved({"Danmini_Doorbell", "Ecobee_Thermostat"})
    assert resolved(packet()) == "Danmini_Doorbell"
    assert issubclass(DetectionError, FediotError)


@pytest.mark.parametrize(("name", "data", "message"), [
    ("latin1.yaml", b"aa:bb:cc:dd:ee:ff: cam\xe9ra\n", "latin1.yaml: line 1: not UTF-8 text"),
    ("nul.json", b'{"10.0.0.1": "cam"}\x00', "nul.json: line 1: NUL byte"),
    ("deep.json", b"[" * 5000 + b"]" * 5000, "deep.json: nested more than 64 levels deep"),
    ("deep.yaml", b"[" * 5000 + b"]" * 5000, "deep.yaml: line 1, column 65: nested more"),
    ("bomb.yaml", b"a: &a [x, x, x]\nb: &b [*a, *a, *a]\n10.0.0.1: *b\n",
     "bomb.yaml: line 2, column 8: alias *a"),
    ("big.yaml", b"#" * (2 * 1024 * 1024), "big.yaml: larger than the limit of 1,048,576"),
    ("broken.yaml", b"10.0.0.1: [cam\n", "broken.yaml: not valid JSON/YAML (line 2, column 1: "),
])
def test_hostile_device_maps_are_one_line(tmp_path: Path, name: str, data: bytes,
                                         message: str) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(DetectionError) as caught:
        DeviceMap.load(path)
    assert str(caught.value).startswith(str(tmp_path))
    assert message in str(caught.value) and "\n" not in str(caught.value), str(caught.value)


def test_resolve_device() -> None:
    known = {"Danmini_Doorbell", "Ecobee_Thermostat#2"}
    assert resolve_device("Danmini_Doorbell", known) == "Danmini_Doorbell"
    assert resolve_device("danmini_doorbell", known) == "Danmini_Doorbell"
    assert resolve_device("ECOBEE_THERMOSTAT#2", known) == "Ecobee_Thermostat#2"
    with pytest.raises(DetectionError, match="unknown device 'Fridge'"):
        resolve_device("Fridge", known)
    with pytest.raises(DetectionError, match="'Ennio_Doorbell': the run has no threshold"):
        resolve_device("Ennio_Doorbell", known)


def verdict(p: Packet, *, attack: bool) -> Verdict:
    return Verdict(41, p, "Danmini_Doorbell", 3.5, 1.25, True, attack, 4, 5, 5)


def test_eve_records() -> None:
    alert = eve_record(verdict(packet(), attack=True), run_id="run-1", model_version="v9",
                       interface="eth0")
    assert alert["timestamp"] == "2023-11-14T22:13:20.250000+0000"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+0000", eve_timestamp(0.5))
    assert alert["event_type"] == "alert" and alert["in_iface"] == "eth0"
    assert (alert["src_ip"], alert["src_port"], alert["dest_ip"], alert["dest_port"]) == (
        CAMERA, 4000, "10.0.0.9", 80)
    assert alert["proto"] == "TCP"
    assert alert["ether"] == {"src_mac": CAMERA_MAC, "dest_mac": "00:00:00:00:00:02"}
    assert alert["alert"]["action"] == "allowed" and alert["alert"]["signature"] == (
        "FEDIOT window vote: most of the last 5 packets of device Danmini_Doorbell scored above "
        "its threshold")
    assert alert["alert"]["signature_id"] == WINDOW_VOTE_SIGNATURE_ID == 1_000_001
    assert (alert["alert"]["gid"], alert["alert"]["rev"]) == (1, 1)
    assert alert["fediot"] == {
        "device": "Danmini_Doorbell", "packet": 41, "score": 3.5, "threshold": 1.25,
        "score_above_threshold": True,
        "window_vote": {"attack": True, "above_threshold": 4, "packets": 5, "window": 5},
        "model_version": "v9", "run": "run-1"}
    json.dumps(alert)

    arp = eve_record(verdict(packet(kind=KIND_ARP, src_port=PORT_ARP, dst_port=PORT_ARP,
                                    ip_proto=0), attack=False),
                     run_id="r", model_version=None, suppressed=3)
    assert arp["event_type"] == "verdict" and "alert" not in arp and "in_iface" not in arp
    assert arp["proto"] == "ARP" and "src_port" not in arp and "dest_port" not in arp
    assert arp["fediot"]["window_vote"]["attack"] is False and arp["fediot"]["suppressed"] == 3
    other = eve_record(verdict(packet(kind=KIND_OTHER, src_ip="", dst_ip="", src_port=PORT_NONE,
                                      dst_port=PORT_NONE, ip_proto=0), attack=True),
                       run_id="r", model_version=None)
    assert not {"src_ip", "dest_ip", "src_port", "dest_port", "proto"} & other.keys()
    assert other["ether"]["src_mac"] == CAMERA_MAC


def test_alerts_wait_while_the_extractor_settles(
    capture: PacketTable, detector: AutoencoderDetector
) -> None:
    """A fresh extractor knows no source for its first ``settle_seconds``: every packet is
    scored and voted on, but no alert is raised then; one with history settles nothing."""
    window = 7
    plain = StreamingDetector(lambda device: detector, window, warmup=None).process(capture)
    rule = WarmupRule(settle_seconds=20.0)
    parts = run_in_parts(StreamingDetector(lambda device: detector, window, warmup=rule),
                         capture, 300)
    settling = capture.timestamp - capture.timestamp[0] < 20.0
    assert 0 < settling.sum() < len(capture)
    assert [v.settling for v in parts] == settling.tolist()
    assert [v.score for v in parts] == [v.score for v in plain]
    assert [v.votes for v in parts] == [v.votes for v in plain]
    assert [v.attack for v in parts] == [v.attack and not s for v, s in
                                         zip(plain, settling.tolist(), strict=True)]
    assert any(v.attack for v, s in zip(plain, settling.tolist(), strict=True) if s)
    assert eve_record(parts[0], run_id="r", model_version=None)["fediot"]["settling"] is True
    assert "settling" not in eve_record(parts[-1], run_id="r", model_version=None)["fediot"]

    warm = FeatureExtractor()
    warm.process(capture.take(slice(0, 10)))
    rest = capture.take(slice(10, len(capture)))
    assert not any(v.settling for v in StreamingDetector(
        lambda device: detector, window, extractor=warm, warmup=rule).process(rest))
