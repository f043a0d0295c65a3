"""``fediot serve`` end to end: a real uvicorn server on loopback, a real (small) federated run,
requests through httpx; and ``fediot export`` through the CLI."""

from __future__ import annotations

import io
import json
import math
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import uvicorn
from fastapi import FastAPI
from hypothesis import example, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

import fediot.faces.cli.serve  # noqa: F401  (registers serve and export)
from federated_data import device_rows, small_run_config, write_uci_dataset
from fediot.core.catalog import DEVICES, FEATURE_NAMES, N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.federated.messages import ModelState
from fediot.core.liveness import ProcessIdentity
from fediot.core.metrics.window import window_vote
from fediot.engines.run_folder import RunFolder, RunView, parse_time
from fediot.engines.simulation import simulate
from fediot.faces.cli.app import app as cli
from fediot.faces.cli.app import console, err_console
from fediot.faces.serve import RequestError, create_app, parse_body
from fediot.faces.serve.metrics import Registry
from ports import free_port

DEVICE_IDS = [d.name for d in DEVICES[:3]]


# --- a real run, and servers on loopback -------------------------------------------------


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 2-round, 3-device run with per-device thresholds and a window of 3."""
    base = tmp_path_factory.mktemp("serve")
    dataset = write_uci_dataset(base / "nbaiot", n_devices=3)
    config = small_run_config(dataset, base / "runs", **{
        "train_args.learning_rate": 0.003, "detection_args.window": 3,
        "detection_args.threshold_mode": "per_device",
    })
    _, folder = simulate(config)
    return folder.root


def copy_run(run_root: Path, runs_dir: Path, name: str | None = None) -> Path:
    """A private copy of the run (tests that rewrite the model must not touch the shared one)."""
    target = runs_dir / (name or run_root.name)
    shutil.copytree(run_root, target)
    return target


@contextmanager
def serving(application: FastAPI) -> Iterator[str]:
    """Run ``application`` with uvicorn in a thread on a free loopback port; yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(application, log_level="warning", lifespan="off",
                                           ws="none"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


@pytest.fixture(scope="module")
def server(run_root: Path) -> Iterator[str]:
    with serving(create_app(RunView(run_root), max_body_bytes=2_000_000)) as url:
        yield url


@pytest.fixture(scope="module")
def client(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=60) as http:
        yield http


def request_rows(device: int = 0, benign: int = 40, attack: int = 20) -> np.ndarray:
    """Consecutive benign then attack rows of one device, as the request would carry them."""
    uci_id = DEVICES[device].uci_id
    rows = np.concatenate([device_rows(uci_id, benign, None, seed=7),
                           device_rows(uci_id, attack, "gafgyt.udp", seed=7)])
    return rows.astype(np.float64)


def csv_body(rows: np.ndarray, header: bool = True) -> bytes:
    lines = [",".join(FEATURE_NAMES)] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in rows]
    return ("\n".join(lines) + "\n").encode()


def parquet_body(rows: np.ndarray | pa.Table) -> bytes:
    table = rows if isinstance(rows, pa.Table) else pa.table(
        {name: rows[:, i] for i, name in enumerate(FEATURE_NAMES)})
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def post(client: httpx.Client, body: bytes | str, content_type: str | None,
         params: dict[str, str] | None = None, accept: str | None = None) -> httpx.Response:
    headers = {} if content_type is None else {"content-type": content_type}
    if accept:
        headers["accept"] = accept
    return client.post("/score", content=body, headers=headers, params=params)


# --- Prometheus text format, parsed line by line -----------------------------------------

_METRIC = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_LABEL_PAIR = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"'
_SAMPLE = re.compile(
    rf"({_METRIC})(?:\{{((?:{_LABEL_PAIR})(?:,{_LABEL_PAIR})*)?,?\}})? "
    r"([+-]?(?:\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?|Inf|NaN))"
    r"(?: -?\d+)?")
_PAIR = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"')
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse_prometheus(text: str) -> Samples:
    """Check ``text`` against the exposition format (0.0.4); return its samples.

    Every line is a ``# HELP``/``# TYPE`` line, another comment, blank, or a sample; a family's
    TYPE comes once, before its samples; histogram buckets are cumulative with ``+Inf`` last
    and equal to ``_count``; counters are ≥ 0.
    """
    assert text.endswith("\n"), "the exposition must end with a newline"
    types: dict[str, str] = {}
    seen_samples: set[str] = set()
    samples: Samples = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                assert re.fullmatch(_METRIC, parts[2]), f"line {number}: bad name {line!r}"
                if parts[1] == "TYPE":
                    assert parts[2] not in types, f"line {number}: second TYPE for {parts[2]}"
                    assert parts[2] not in seen_samples, f"line {number}: TYPE after samples"
                    assert len(parts) == 4 and parts[3] in (
                        "counter", "gauge", "histogram", "summary", "untyped"), line
                    types[parts[2]] = parts[3]
            continue
        match = _SAMPLE.fullmatch(line)
        assert match, f"line {number} is not a sample: {line!r}"
        name, labels_text, value_text = match.groups()
        labels = frozenset(_PAIR.findall(labels_text or ""))
        family = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and types.get(name[: -len(suffix)]) == "histogram":
                family = name[: -len(suffix)]
        assert family in types, f"line {number}: {name} has no TYPE line before it"
        seen_samples.add(family)
        value = float(value_text.replace("Inf", "inf"))
        if types[family] == "counter":
            assert name.endswith("_total") and value >= 0, line
        key = (name, labels)
        assert key not in samples, f"line {number}: duplicate sample {line!r}"
        samples[key] = value
    for family, kind in types.items():
        if kind != "histogram":
            continue
        series: dict[frozenset[tuple[str, str]], list[tuple[float, float]]] = {}
        for (name, labels), value in samples.items():
            if name == f"{family}_bucket":
                le = dict(labels)["le"]
                rest = frozenset(p for p in labels if p[0] != "le")
                series.setdefault(rest, []).append((float(le.replace("Inf", "inf")), value))
        for rest, buckets in series.items():
            bounds = [b for b, _ in buckets]
            assert bounds == sorted(bounds) and bounds[-1] == math.inf, family
            counts = [c for _, c in buckets]
            assert counts == sorted(counts), f"{family}: buckets are not cumulative"
            assert samples[(f"{family}_count", rest)] == counts[-1]
            assert (f"{family}_sum", rest) in samples
    return samples


def metric(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(client: httpx.Client) -> Samples:
    reply = client.get("/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse_prometheus(reply.text)


def test_prometheus_renderer_escapes_and_the_parser_rejects_bad_lines() -> None:
    registry = Registry()
    registry.counter("odd_total", 'help with \\ and\nnewline', ("path",)).inc(
        path='a "quoted" \\ back\nslash')
    histogram = registry.histogram("lat_seconds", "latency", buckets=(0.1, 1.0))
    for value in (0.05, 0.5, 5.0):
        histogram.observe(value)
    registry.gauge("info", "x", ("v",)).replace(1, v="new")
    text = registry.render()
    samples = parse_prometheus(text)
    assert metric(samples, "odd_total", path='a \\"quoted\\" \\\\ back\\nslash') == 1
    assert metric(samples, "lat_seconds_bucket", le="0.1") == 1
    assert metric(samples, "lat_seconds_bucket", le="1") == 2
    assert metric(samples, "lat_seconds_bucket", le="+Inf") == 3
    assert metric(samples, "lat_seconds_sum") == pytest.approx(5.55)
    assert "# HELP odd_total help with \\\\ and\\nnewline\n" in text
    for bad in ("no_type_total 1\n", "# TYPE x counter\nx 1\n",
                '# TYPE g gauge\ng{l="unterminated} 1\n', "# TYPE g gauge\ng one\n"):
        with pytest.raises(AssertionError):
            parse_prometheus(bad)


# --- scoring -------------------------------------------------------------------------------


def test_json_scores_equal_the_run_detector(client: httpx.Client, run_root: Path) -> None:
    rows = request_rows()
    reply = post(client, json.dumps({"rows": rows.tolist()}), "application/json")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    view = RunView(run_root)
    expected = view.detector().score_samples(rows)
    # the same rows through the same float32 network: equal up to float32 rounding
    np.testing.assert_allclose(body["scores"], expected, rtol=1e-6)
    _, thresholds = view.load_model()
    assert body["threshold"] == thresholds.global_threshold and body["device"] is None
    assert body["verdicts"] == ["attack" if s > body["threshold"] else "benign"
                                for s in body["scores"]]
    assert body["rows"] == len(rows) and body["attacks"] == body["verdicts"].count("attack")
    assert body["run"] == view.run_id and body["model_version"] == view.model_version()
    assert "window_verdicts" not in body
    # the attack rows score far above the benign ones: a trained model, not noise
    assert np.median(body["scores"][40:]) > 10 * np.median(body["scores"][:40])


@pytest.mark.parametrize("layout", ["objects", "bare list", "csv", "csv no header", "parquet",
                                    "parquet float32"])
def test_every_body_format_gives_the_same_scores(client: httpx.Client, run_root: Path,
                                                 layout: str) -> None:
    rows = request_rows(benign=10, attack=5)
    expected = RunView(run_root).detector().score_samples(rows)
    if layout == "objects":
        objects = [dict(zip(FEATURE_NAMES, row.tolist(), strict=True)) for row in rows]
        reply = post(client, json.dumps({"rows": objects}), "application/json")
    elif layout == "bare list":
        reply = post(client, json.dumps(rows.tolist()), "application/json; charset=utf-8")
    elif layout.startswith("csv"):
        reply = post(client, csv_body(rows, header=layout == "csv"), "text/csv")
    elif layout == "parquet":
        reply = post(client, parquet_body(rows), "application/vnd.apache.parquet")
    else:
        table = pa.table({n: rows[:, i].astype(np.float32) for i, n in enumerate(FEATURE_NAMES)})
        reply = post(client, parquet_body(table), "application/x-parquet")
        expected = RunView(run_root).detector().score_samples(rows.astype(np.float32))
    assert reply.status_code == 200, reply.text
    np.testing.assert_allclose(reply.json()["scores"], expected, rtol=1e-6)


@pytest.mark.parametrize("device", DEVICE_IDS)
def test_verdicts_and_window_vote_follow_the_device_threshold(
        client: httpx.Client, run_root: Path, device: str) -> None:
    rows = request_rows(DEVICE_IDS.index(device), benign=30, attack=30)
    reply = post(client, json.dumps({"rows": rows.tolist(), "device": device, "window": True}),
                 "application/json")
    assert reply.status_code == 200, reply.text
    body = reply.json()
    detector = RunView(run_root).detector(device)  # per-device threshold, the run's window 3
    assert body["device"] == device and body["threshold"] == detector.threshold_
    flags = detector.score_samples(rows) > detector.threshold_
    assert body["verdicts"] == ["attack" if f else "benign" for f in flags]
    assert body["window"] == 3
    assert body["window_verdicts"] == [
        "attack" if f else "benign" for f in detector.predict(rows).astype(bool)]
    assert body["window_attacks"] == int(detector.predict(rows).sum())
    # the same request, device and window in the query instead of the body
    by_query = post(client, csv_body(rows), "text/csv", {"device": device, "window": "run"})
    assert by_query.json()["window_verdicts"] == body["window_verdicts"]


def test_per_device_thresholds_differ_and_window_parameter(client: httpx.Client,
                                                           run_root: Path) -> None:
    _, thresholds = RunView(run_root).load_model()
    assert thresholds.mode == "per_device" and len(set(thresholds.per_device.values())) == 3
    rows = request_rows(benign=20, attack=20)
    reply = post(client, csv_body(rows), "text/csv", {"window": "7"}).json()
    flags = np.array(reply["verdicts"]) == "attack"
    assert reply["window"] == 7
    assert reply["window_verdicts"] == [
        "attack" if f else "benign" for f in window_vote(flags, 7)]


def test_csv_reply_on_request(client: httpx.Client, run_root: Path) -> None:
    rows = request_rows(benign=5, attack=5)
    reply = post(client, csv_body(rows), "text/csv", {"window": "3"},
                 accept="text/csv, application/json;q=0.5")
    assert reply.status_code == 200 and reply.headers["content-type"].startswith("text/csv")
    view = RunView(run_root)
    assert reply.headers["x-model-version"] == view.model_version()
    lines = reply.text.splitlines()
    assert lines[0] == "row,score,threshold,verdict,window_verdict" and len(lines) == 11
    scores = [float(line.split(",")[1]) for line in lines[1:]]
    np.testing.assert_allclose(scores, view.detector().score_samples(rows), rtol=1e-6)
    plain = post(client, csv_body(rows), "text/csv", accept="application/json, text/csv;q=0.9")
    assert plain.headers["content-type"].startswith("application/json")


# --- refusals: 4xx naming the problem, never a 500 ----------------------------------------

ROW = [1.0] * N_FEATURES


def _json_rows(*rows: Any) -> str:
    return json.dumps({"rows": list(rows)})


def _nan_parquet() -> bytes:
    rows = np.ones((3, N_FEATURES))
    rows[2, 4] = np.nan
    return parquet_body(rows)


def _renamed_parquet() -> bytes:
    names = list(FEATURE_NAMES)
    names[6] = "bogus"
    return parquet_body(pa.table({n: np.ones(2) for n in names}))


def _text_parquet() -> bytes:
    columns: dict[str, Any] = {n: np.ones(2) for n in FEATURE_NAMES}
    columns[FEATURE_NAMES[3]] = ["a", "b"]
    return parquet_body(pa.table(columns))


def _non_utf8_parquet() -> bytes:
    """Column 1's name patched to bytes that are not UTF-8 (same length: the Thrift footer
    stays well formed); no Arrow schema, so only the Parquet names carry it."""
    sink = io.BytesIO()
    pq.write_table(pa.table({n: np.ones(2) for n in FEATURE_NAMES}), sink, store_schema=False)
    name = FEATURE_NAMES[0].encode()
    body = sink.getvalue()
    assert body.count(name) >= 1
    return body.replace(name, name[:-2] + b"\xff\xfe")


def _null_parquet() -> bytes:
    columns: dict[str, Any] = {n: pa.array([1.0, 2.0]) for n in FEATURE_NAMES}
    columns[FEATURE_NAMES[0]] = pa.array([1.0, None])
    return parquet_body(pa.table(columns))


BAD_REQUESTS: list[tuple[str, str | None, bytes | str, dict[str, str] | None, int, str]] = [
    ("json short row", "application/json", _json_rows(ROW, ROW[:-1]), None, 400,
     "row 2 has 114 values; expected 115"),
    ("json NaN", "application/json", _json_rows(ROW, [*ROW[:2], float("nan"), *ROW[3:]]),
     None, 400, "row 2, column 3 (MI_dir_L5_variance): nan is not a finite number"),
    ("json Infinity", "application/json",
     '{"rows": [[' + ",".join(["1"] * 114) + ",Infinity]]}", None, 400,
     "row 1, column 115 (HpHp_L0.01_pcc): inf is not a finite number"),
    ("json text value", "application/json", _json_rows(ROW, ["x", *ROW[1:]]), None, 400,
     'row 2, column 1 (MI_dir_L5_weight): "x" is not a number'),
    ("json boolean", "application/json", _json_rows([True, *ROW[1:]]), None, 400,
     "row 1, column 1 (MI_dir_L5_weight): true is not a number"),
    ("json not a row", "application/json", _json_rows(ROW, 5), None, 400,
     "row 2: expected a list of 115 numbers"),
    ("json syntax", "application/json", '{"rows": [[1, 2]', None, 400,
     "body is not valid JSON"),
    ("json huge integer", "application/json", '{"rows": [[1' + "0" * 400 + ","
     + ",".join(["1"] * 114) + "]]}", None, 400,
     "row 1, column 1 (MI_dir_L5_weight): inf is not a finite number"),
    ("json endless integer", "application/json", '{"rows": [[' + "9" * 5000 + "]]}", None, 400,
     "body is not usable JSON: Exceeds the limit"),
    ("json nested too deeply", "application/json", "[" * 100_000 + "]" * 100_000, None, 400,
     "body is not usable JSON: nested too deeply"),
    ("json no rows key", "application/json", '{"device": "x"}', None, 400,
     "JSON body has no 'rows'"),
    ("json unknown key", "application/json", '{"rows": [], "colour": 1}', None, 400,
     "unknown key 'colour'"),
    ("json empty rows", "application/json", '{"rows": []}', None, 400, "no rows to score"),
    ("json scalar", "application/json", "42", None, 400, "JSON body must be an object"),
    ("json unknown feature", "application/json",
     json.dumps({"rows": [{**dict.fromkeys(FEATURE_NAMES, 1.0), "speed": 3}]}), None, 400,
     "row 1: unknown feature 'speed'"),
    ("json missing feature", "application/json",
     json.dumps({"rows": [dict.fromkeys(FEATURE_NAMES[:-1], 1.0)]}), None, 400,
     "row 1: missing feature 'HpHp_L0.01_pcc'"),
    ("json device not text", "application/json", json.dumps({"rows": [ROW], "device": 3}),
     None, 400, "'device' must be a device name"),
    ("unknown device in body", "application/json",
     json.dumps({"rows": [ROW], "device": "Toaster"}), None, 400,
     "unknown device 'Toaster'; run "),
    ("unknown device in query", "text/csv", ",".join(["1"] * N_FEATURES), {"device": "Toaster"},
     400, "has thresholds for Danmini_Doorbell, Ecobee_Thermostat, Ennio_Doorbell"),
    ("device twice", "application/json",
     json.dumps({"rows": [ROW], "device": "Ennio_Doorbell"}), {"device": "Danmini_Doorbell"},
     400, "device is 'Ennio_Doorbell' in the body but 'Danmini_Doorbell' in the query"),
    ("window not a number", "text/csv", ",".join(["1"] * N_FEATURES), {"window": "wide"}, 400,
     "query parameter 'window': 'wide' is not a positive integer"),
    ("window negative", "application/json", json.dumps({"rows": [ROW], "window": -2}), None,
     400, "'window' in the body: -2 is not a positive integer"),
    ("window 2**63", "text/csv", ",".join(["1"] * N_FEATURES), {"window": str(2**63)}, 400,
     "query parameter 'window': 9223372036854775808 is more than the largest window, "
     "100,000 rows"),
    ("window beyond the limit in the body", "application/json",
     json.dumps({"rows": [ROW], "window": 100_001}), None, 400,
     "'window' in the body: 100001 is more than the largest window"),
    ("window of 5000 digits", "text/csv", ",".join(["1"] * N_FEATURES), {"window": "9" * 5000},
     400, "query parameter 'window': '" + "9" * 38 + "… is not a positive integer"),
    ("csv short line", "text/csv", ",".join(FEATURE_NAMES) + "\n" + ",".join(["1"] * 115)
     + "\n" + ",".join(["1"] * 114) + "\n", None, 400, "CSV line 3: 114 columns, expected 115"),
    ("csv text value", "text/csv",
     ",".join(["1"] * 115) + "\n" + ",".join(["1"] * 4 + ["abc"] + ["1"] * 110) + "\n", None,
     400, "CSV line 2, column 5 (MI_dir_L3_mean): not a number: 'abc'"),
    ("csv nan", "text/csv", ",".join(["1"] * 115) + "\n" + ",".join(["nan"] + ["1"] * 114),
     None, 400, "CSV line 2, column 1 (MI_dir_L5_weight): 'nan' is not a finite number"),
    ("csv inf without header", "text/csv", ",".join(["inf"] + ["1"] * 114), None, 400,
     "CSV line 1, column 1 (MI_dir_L5_weight): 'inf' is not a finite number"),
    ("csv empty value", "text/csv", ",".join(["1"] * 114 + [""]), None, 400,
     "CSV line 1, column 115 (HpHp_L0.01_pcc): empty value"),
    ("csv bad header", "text/csv",
     ",".join(["MI_dir_L5_weight", "oops", *FEATURE_NAMES[2:]]) + "\n" + ",".join(["1"] * 115),
     None, 400, "column 2 is 'oops', expected 'MI_dir_L5_mean'"),
    ("csv header only", "text/csv", ",".join(FEATURE_NAMES) + "\n", None, 400,
     "no rows to score"),
    ("csv not utf-8", "text/csv", b",".join([b"1"] * 115) + b"\n" + b"\xff\xfe" + b",".join(
        [b"1"] * 115), None, 400, "CSV line 2: not UTF-8 text"),
    ("parquet corrupt", "application/vnd.apache.parquet", b"PAR1 this is not parquet", None,
     400, "body is not a readable Parquet file"),
    ("parquet NaN", "application/vnd.apache.parquet", _nan_parquet(), None, 400,
     "row 3, column 5 (MI_dir_L3_mean): nan is not a finite number"),
    ("parquet renamed column", "application/x-parquet", _renamed_parquet(), None, 400,
     "Parquet columns: column 7 is 'bogus', expected 'MI_dir_L1_weight'"),
    ("parquet text column", "application/x-parquet", _text_parquet(), None, 400,
     "Parquet column 4 (MI_dir_L3_weight) has type string"),
    ("parquet null", "application/x-parquet", _null_parquet(), None, 400,
     "row 2, column 1 (MI_dir_L5_weight): missing value"),
    ("parquet column name not UTF-8", "application/x-parquet", _non_utf8_parquet(), None, 400,
     "Parquet metadata is not UTF-8 text: b'MI_dir_L5_weig\\xff\\xfe' (column names must be"),
    ("empty body", "application/json", b"", None, 400, "empty body"),
    ("blank csv body", "text/csv", b"\n\n", None, 400, "empty body"),
    ("wrong content type", "text/plain", b"1,2,3", None, 415,
     "Content-Type 'text/plain': send one of application/json, text/csv"),
    ("no content type", None, b"1,2,3", None, 415, "no Content-Type"),
    ("too large", "text/csv", b"1" * 2_000_001, None, 413,
     "body larger than the limit of 2,000,000 bytes"),
]


@pytest.mark.parametrize(("content_type", "body", "params", "status", "message"),
                         [case[1:] for case in BAD_REQUESTS], ids=[c[0] for c in BAD_REQUESTS])
def test_bad_requests_are_refused_with_the_problem_named(
        client: httpx.Client, content_type: str | None, body: bytes | str,
        params: dict[str, str] | None, status: int, message: str) -> None:
    reply = post(client, body, content_type, params)
    assert reply.status_code == status, reply.text
    assert reply.headers["content-type"] == "application/json"
    assert message in reply.json()["detail"]


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner,
                                                                max_size=3),
    max_leaves=20)


@settings(max_examples=100, deadline=None)
@given(body=st.one_of(
    st.binary(max_size=300),
    st.text(alphabet="0123456789.,-+eEnaif \n\r\"x", max_size=400).map(str.encode),
    st.builds(lambda rows, extra: json.dumps({"rows": rows, **extra}).encode(), JSON_VALUES,
              st.dictionaries(st.sampled_from(["device", "window", "x"]), JSON_VALUES,
                              max_size=2)),
    st.lists(st.lists(st.floats() | st.integers(), min_size=114, max_size=116), min_size=1,
             max_size=3).map(lambda rows: json.dumps(rows).encode()),
), content_type=st.sampled_from(["application/json", "text/csv", "application/x-parquet"]))
@example(body=b"\r\x00", content_type="text/csv")  # once crashed Python's csv module
@example(body=b"1\n2\r3\x00", content_type="text/csv")
def test_any_body_is_parsed_or_refused_with_a_request_error(body: bytes,
                                                           content_type: str) -> None:
    """Whatever arrives, parsing ends in rows or a RequestError (a 4xx), never anything else."""
    try:
        parsed = parse_body(body, content_type)
    except RequestError as error:
        assert 400 <= error.status < 500 and str(error)
    else:
        assert parsed.rows.ndim == 2 and parsed.rows.shape[1] == N_FEATURES
        assert len(parsed.rows) and np.isfinite(parsed.rows).all()


def test_a_chunked_body_is_cut_off_at_the_limit(client: httpx.Client) -> None:
    """No Content-Length to refuse up front: the limit applies while the body streams in."""
    def chunks() -> Iterator[bytes]:
        for _ in range(300):
            yield b"1" * 10_000

    reply = client.post("/score", content=chunks(), headers={"content-type": "text/csv"})
    assert reply.status_code == 413
    assert "larger than the limit of 2,000,000 bytes" in reply.json()["detail"]


def test_refusals_never_reach_the_catch_all(client: httpx.Client) -> None:
    before = scrape(client)
    for _, content_type, body, params, _, _ in BAD_REQUESTS:
        post(client, body, content_type, params)
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("fediot_serve_internal_errors_total") == 0
    assert delta("fediot_serve_requests_total", endpoint="/score", status="500") == 0
    for status in (400, 413, 415):
        expected = sum(case[4] == status for case in BAD_REQUESTS)
        assert delta("fediot_serve_requests_total", endpoint="/score",
                     status=str(status)) == expected


def test_unexpected_errors_are_a_clean_500(run_root: Path, tmp_path: Path) -> None:
    application = create_app(RunView(run_root))

    def broken() -> None:
        raise RuntimeError("secret internal detail")

    application.add_api_route("/broken", broken)
    with serving(application) as url, httpx.Client(base_url=url) as http:
        reply = http.get("/broken")
        assert reply.status_code == 500
        assert reply.json() == {"detail": "internal server error"}
        assert "secret" not in reply.text and "Traceback" not in reply.text
        samples = scrape(http)
        assert metric(samples, "fediot_serve_internal_errors_total") == 1
        assert metric(samples, "fediot_serve_requests_total", endpoint="other",
                      status="500") == 1
        assert http.get("/healthz").status_code == 200  # the server carries on


# --- limits: rows per request, counted before decoding ------------------------------------


@pytest.fixture(scope="module")
def small_client(run_root: Path) -> Iterator[httpx.Client]:
    """A server taking at most 5 rows per request."""
    with serving(create_app(RunView(run_root), max_rows=5)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        yield http


@pytest.mark.parametrize(("content_type", "body", "message"), [
    ("application/json", json.dumps({"rows": [ROW] * 6}), "6 rows: more than the limit of 5"),
    ("application/json", json.dumps([ROW] * 6), "6 rows: more than the limit of 5"),
    ("text/csv", csv_body(np.ones((6, N_FEATURES))), "7 rows (lines): more than the limit of 5"),
    ("text/csv", b"%s\n%s" % (",".join(FEATURE_NAMES).encode(), csv_body(
        np.ones((6, N_FEATURES)), header=False).replace(b"\n", b"\r")),
     "6 rows: more than the limit of 5"),  # lone carriage returns: counted once parsed
    ("application/x-parquet", parquet_body(np.ones((6, N_FEATURES))),
     "6 rows (Parquet metadata): more than the limit of 5"),
])
def test_too_many_rows_are_refused_with_413(small_client: httpx.Client, content_type: str,
                                            body: bytes | str, message: str) -> None:
    reply = post(small_client, body, content_type)
    assert reply.status_code == 413, reply.text
    assert message in reply.json()["detail"]
    assert "split the rows into requests" in reply.json()["detail"]


def test_the_row_limit_itself_is_accepted(small_client: httpx.Client) -> None:
    for content_type, body in [("application/json", json.dumps([ROW] * 5)),
                               ("text/csv", csv_body(np.ones((5, N_FEATURES)))),
                               ("application/x-parquet", parquet_body(np.ones((5, N_FEATURES))))]:
        reply = post(small_client, body, content_type)
        assert reply.status_code == 200 and reply.json()["rows"] == 5, reply.text


def test_a_small_parquet_of_millions_of_rows_is_refused_from_its_metadata(
        client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """1.4 MiB of Parquet holding 3,000,000 zero rows (11 GiB once decoded, as observed):
    refused before a single value is decompressed."""
    zeros = pa.array(np.zeros(3_000_000))
    body = parquet_body(pa.table(dict.fromkeys(FEATURE_NAMES, zeros)))
    assert len(body) < 2_000_000  # under the test server's body limit

    def never(*_: object, **__: object) -> None:
        raise AssertionError("the Parquet body was decoded")

    monkeypatch.setattr(pq.ParquetFile, "read", never)  # the server runs in this process
    reply = post(client, body, "application/vnd.apache.parquet")
    assert reply.status_code == 413, reply.text
    assert reply.json()["detail"].startswith(
        "3,000,000 rows (Parquet metadata): more than the limit of 100,000 per request")


# --- access: loopback Host names without a token, a bearer token otherwise; no /docs ------

TOKEN = "s3cret-token-of-32-characters-xx"


def test_a_foreign_host_is_refused(client: httpx.Client) -> None:
    """A page on attacker.example rebinding its name to 127.0.0.1 sends that name as Host."""
    port = client.base_url.port
    for path in ("/healthz", "/metrics"):
        reply = client.get(path, headers={"Host": "attacker.example"})
        assert reply.status_code == 403, path
        assert "loopback" in reply.json()["detail"]
    reply = client.post("/score", content=",".join(["1"] * N_FEATURES),
                        headers={"Host": f"attacker.example:{port}", "content-type": "text/csv"})
    assert reply.status_code == 403
    for host in (f"localhost:{port}", f"127.0.0.1:{port}", "[::1]", "127.0.0.2"):
        assert client.get("/healthz", headers={"Host": host}).status_code == 200, host


def test_api_documentation_pages_are_off(client: httpx.Client) -> None:
    """FastAPI's pages load their scripts from public CDNs: not served at all."""
    for path in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert client.get(path).status_code == 404, path


def test_a_token_is_required_in_every_request(run_root: Path) -> None:
    rows = request_rows(benign=3, attack=2)
    with serving(create_app(RunView(run_root), token=TOKEN)) as url, \
            httpx.Client(base_url=url, timeout=60) as http:
        for headers in ({}, {"Authorization": f"Bearer {TOKEN}x"},
                        {"Authorization": f"Basic {TOKEN}"}, {"Authorization": TOKEN},
                        {"Authorization": "Bearer"}):
            for path in ("/healthz", "/metrics"):
                reply = http.get(path, headers=headers)
                assert reply.status_code == 401, (path, headers)
                assert reply.headers["www-authenticate"].startswith("Bearer")
            assert post(http, csv_body(rows), "text/csv").status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        assert http.get("/healthz", headers=good).status_code == 200
        assert http.get("/healthz", headers={"Authorization": f"bearer  {TOKEN}"}
                        ).status_code == 200
        # the token, unknown to a rebinding page, replaces the Host check
        assert http.get("/healthz", headers={**good, "Host": "scorer.example"}
                        ).status_code == 200
        reply = http.post("/score", content=csv_body(rows),
                          headers={**good, "content-type": "text/csv"})
        assert reply.status_code == 200 and reply.json()["rows"] == 5
        samples = parse_prometheus(http.get("/metrics", headers=good).text)
        assert metric(samples, "fediot_serve_requests_total", endpoint="/healthz",
                      status="401") == 5
        assert metric(samples, "fediot_serve_internal_errors_total") == 0


def test_create_app_refuses_short_tokens_and_bad_row_limits(run_root: Path) -> None:
    with pytest.raises(FediotError, match="at least 16 characters"):
        create_app(RunView(run_root), token="short")
    with pytest.raises(FediotError, match="max_rows must be ≥ 1"):
        create_app(RunView(run_root), max_rows=0)


# --- health, metrics -------------------------------------------------------------------------


def test_healthz_names_the_run_and_model(client: httpx.Client, run_root: Path) -> None:
    reply = client.get("/healthz")
    view = RunView(run_root)
    assert reply.status_code == 200
    assert reply.json() == {"status": "ok", "run": view.run_id,
                            "model_version": view.model_version(), "devices": DEVICE_IDS,
                            "window": 3, "windows": dict.fromkeys(DEVICE_IDS, 3),
                            "threshold_mode": "per_device", "follows_latest": False}


def test_metrics_count_requests_rows_and_verdicts(client: httpx.Client, run_root: Path) -> None:
    before = scrape(client)
    rows = request_rows(0, benign=25, attack=15)
    device = DEVICE_IDS[0]
    body = post(client, json.dumps({"rows": rows.tolist(), "device": device}),
                "application/json").json()
    assert post(client, b"", "text/csv").status_code == 400
    after = scrape(client)

    def delta(name: str, **labels: str) -> float:
        return metric(after, name, **labels) - metric(before, name, **labels)

    assert delta("fediot_serve_requests_total", endpoint="/score", status="200") == 1
    assert delta("fediot_serve_requests_total", endpoint="/score", status="400") == 1
    assert delta("fediot_serve_requests_total", endpoint="/metrics", status="200") == 1
    assert delta("fediot_serve_rows_scored_total") == 40
    assert delta("fediot_serve_attack_verdicts_total", device=device) == body["attacks"] >= 15
    assert delta("fediot_serve_scoring_seconds_count") == 1
    assert delta("fediot_serve_request_seconds_count", endpoint="/score") == 2
    view = RunView(run_root)
    assert metric(after, "fediot_serve_model_info", run=view.run_id,
                  model_version=str(view.model_version())) == 1
    assert metric(after, "fediot_serve_model_loaded") == 1
    assert metric(after, "fediot_serve_model_reloads_total") == 0


# --- hot reload ------------------------------------------------------------------------------


def new_weights(view: RunView, factor: float) -> ModelState:
    state, _ = view.load_model()
    return ModelState([w * np.float32(factor) for w in state.weights], state.scaler)


def test_a_newer_model_is_served_without_dropping_requests(run_root: Path,
                                                           tmp_path: Path) -> None:
    root = copy_run(run_root, tmp_path / "runs")
    view = RunView(root)
    rows = request_rows(benign=20, attack=10)
    payload = json.dumps({"rows": rows.tolist()})
    application = create_app(view, check_interval=0)
    with serving(application) as url, httpx.Client(base_url=url, timeout=60) as http:
        first = post(http, payload, "application/json").json()
        old_version = first["model_version"]
        statuses: list[int] = []
        stop = threading.Event()

        def hammer() -> None:
            with httpx.Client(base_url=url, timeout=60) as own:
                while not stop.is_set():
                    statuses.append(post(own, payload, "application/json").status_code)

        worker = threading.Thread(target=hammer)
        worker.start()
        try:
            time.sleep(0.2)
            _, thresholds = view.load_model()
            RunFolder(root).save_model(new_weights(view, 0.5), thresholds)
            deadline = time.monotonic() + 30
            while post(http, payload, "application/json").json()["model_version"] == old_version:
                assert time.monotonic() < deadline, "the new model was never served"
                time.sleep(0.05)
            time.sleep(0.2)
        finally:
            stop.set()
            worker.join(timeout=60)
        assert statuses and set(statuses) == {200}
        second = post(http, payload, "application/json").json()
        assert second["model_version"] == view.model_version() != old_version
        np.testing.assert_allclose(second["scores"], view.detector().score_samples(rows),
                                   rtol=1e-6)
        assert not np.allclose(second["scores"], first["scores"])
        assert http.get("/healthz").json()["model_version"] == second["model_version"]
        samples = scrape(http)
        assert metric(samples, "fediot_serve_model_reloads_total") == 1
        assert metric(samples, "fediot_serve_model_info", run=view.run_id,
                      model_version=second["model_version"]) == 1
        assert metric(samples, "fediot_serve_model_info", run=view.run_id,
                      model_version=old_version) == 0


def test_a_run_without_a_model_answers_503_until_one_is_saved(run_root: Path,
                                                              tmp_path: Path) -> None:
    source = RunView(run_root)
    state, thresholds = source.load_model()
    config = source.config().with_overrides(
        {"tracking_args.log_file_dir": str(tmp_path / "runs"),
         "tracking_args.run_name": "in-progress"})
    folder = RunFolder.create(config)  # a run still training: config, no model yet
    with serving(create_app("in-progress", runs_dir=tmp_path / "runs", check_interval=0)) as url, \
            httpx.Client(base_url=url) as http:
        health = http.get("/healthz")
        assert health.status_code == 503
        assert health.json()["status"] == "unavailable" and health.json()["run"] == "in-progress"
        assert "no saved model yet" in health.json()["detail"]
        refused = post(http, json.dumps({"rows": [ROW]}), "application/json")
        assert refused.status_code == 503 and "no model to serve yet" in refused.json()["detail"]
        assert metric(scrape(http), "fediot_serve_model_loaded") == 0
        folder.save_model(state, thresholds)
        assert http.get("/healthz").status_code == 200
        assert post(http, json.dumps({"rows": [ROW]}), "application/json").status_code == 200
        assert metric(scrape(http), "fediot_serve_model_reloads_total") == 0  # a first load


def set_status(root: Path, **fields: Any) -> None:
    """Rewrite a copied run's status: started an hour after the original, then ``fields``."""
    status = json.loads((root / "status.json").read_text())
    first = parse_time(status["started_at"]) or datetime.now(UTC)
    status.update(started_at=(first + timedelta(hours=1)).isoformat(),
                  owner=ProcessIdentity.current().to_dict(),
                  heartbeat_at=datetime.now(UTC).isoformat(), **fields)
    (root / "status.json").write_text(json.dumps(status))


def test_latest_follows_a_later_run(run_root: Path, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    copy_run(run_root, runs, "a-first")
    rows = request_rows(benign=5, attack=5)
    with serving(create_app("latest", runs_dir=runs, check_interval=0)) as url, \
            httpx.Client(base_url=url) as http:
        assert post(http, csv_body(rows), "text/csv").json()["run"] == "a-first"
        later = RunView(copy_run(run_root, runs, "b-later"))
        _, thresholds = later.load_model()
        RunFolder(later.root).save_model(new_weights(later, 2.0), thresholds)
        set_status(later.root, state="running")  # started later, still running: not followed
        assert post(http, csv_body(rows), "text/csv").json()["run"] == "a-first"
        set_status(later.root, state="failed")  # nor once it failed
        assert post(http, csv_body(rows), "text/csv").json()["run"] == "a-first"
        # reading the older run (a report written into it) does not make it the newer
        (runs / "a-first" / "report.html").write_text("read")
        set_status(later.root, state="finished")  # a newly finished run takes over
        reply = post(http, csv_body(rows), "text/csv").json()
        assert reply["run"] == "b-later"
        np.testing.assert_allclose(reply["scores"], later.detector().score_samples(rows),
                                   rtol=1e-6)
        assert http.get("/healthz").json()["follows_latest"] is True
        assert metric(scrape(http), "fediot_serve_model_reloads_total") == 1


def test_create_app_refuses_unknown_runs_and_devices(run_root: Path, tmp_path: Path) -> None:
    from fediot.core.errors import FediotError

    with pytest.raises(FediotError, match="no run 'nope'"):
        create_app("nope", runs_dir=tmp_path)
    with pytest.raises(FediotError, match="unknown device 'Toaster'"):
        create_app(RunView(run_root), device="Toaster")


# --- the CLI: fediot serve in a subprocess, fediot export ----------------------------------


@pytest.fixture
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(console, "width", 250)
    monkeypatch.setattr(err_console, "width", 5000)


@pytest.mark.slow
def test_fediot_serve_command_serves_the_run(run_root: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "fediot.faces.cli.main", "serve", "--run", str(run_root),
         "--port", str(port), "--device", DEVICE_IDS[1]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "fediot serve did not come up"
            time.sleep(0.1)
        rows = request_rows(1, benign=5, attack=5)
        reply = httpx.post(f"{url}/score", content=csv_body(rows),
                           headers={"content-type": "text/csv"}).json()
        detector = RunView(run_root).detector(DEVICE_IDS[1])
        assert reply["device"] == DEVICE_IDS[1] and reply["threshold"] == detector.threshold_
        np.testing.assert_allclose(reply["scores"], detector.score_samples(rows), rtol=1e-6)
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
    assert f"run {run_root.name}, model version" in output


@pytest.mark.usefixtures("wide_console")
@pytest.mark.parametrize(("arguments", "message"), [
    (["serve", "--run", "nope"], "no run 'nope'"),
    (["serve", "--port", "0"], "--port must be in 1–65535"),
    (["serve", "--host", "0.0.0.0"], "--host 0.0.0.0: the scoring API would be open to anyone"),
    (["serve", "--host", "192.168.1.20"], "give a --token (at least 16 characters)"),
    (["serve", "--token", "short"], "--token: at least 16 characters (got 5)"),
    (["serve", "--max-rows", "0"], "--max-rows must be ≥ 1"),
    (["export", "--format", "tflite"], "--format must be one of torchscript, onnx"),
    (["export", "--format", "onnx", "--run", "nope"], "no run 'nope'"),
])
def test_cli_refusals_are_one_line(arguments: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, [*arguments, "--runs-dir", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


@pytest.mark.usefixtures("wide_console")
@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("file_format", ["torchscript", "onnx"])
def test_fediot_export_writes_a_scorer_and_its_sidecar(run_root: Path, tmp_path: Path,
                                                       file_format: str) -> None:
    output = tmp_path / ("scorer.pt" if file_format == "torchscript" else "scorer.onnx")
    result = CliRunner().invoke(cli, ["export", "--run", str(run_root), "--format", file_format,
                                      "--output", str(output)])
    assert result.exit_code == 0, result.stderr
    sidecar = json.loads(Path(f"{output}.json").read_text())
    view = RunView(run_root)
    _, thresholds = view.load_model()
    assert sidecar["thresholds"] == thresholds.to_dict() and sidecar["window"] == 3
    assert sidecar["input"]["columns"] == list(FEATURE_NAMES)
    assert sidecar["model_version"] == view.model_version() and sidecar["format"] == file_format
    rows = request_rows(2, benign=30, attack=30).astype(np.float32)
    if file_format == "torchscript":
        scorer = torch.jit.load(str(output))  # type: ignore[no-untyped-call]
        scores = scorer(torch.from_numpy(rows)).numpy()
    else:
        session = ort.InferenceSession(str(output), providers=["CPUExecutionProvider"])
        scores = session.run([sidecar["output"]["name"]], {sidecar["input"]["name"]: rows})[0]
    np.testing.assert_allclose(scores, view.detector().score_samples(rows), rtol=1e-5)
    default = CliRunner().invoke(cli, ["export", "--run", str(copy_run(run_root, tmp_path)),
                                       "--format", file_format])
    assert default.exit_code == 0, default.stderr
    assert len(list((tmp_path / run_root.name / "export").iterdir())) == 2


@pytest.mark.usefixtures("wide_console")
def test_onnx_and_torchscript_exports_keep_their_own_sidecars(run_root: Path,
                                                             tmp_path: Path) -> None:
    run = copy_run(run_root, tmp_path)
    for file_format in ("onnx", "torchscript"):
        result = CliRunner().invoke(cli, ["export", "--run", str(run), "--format", file_format])
        assert result.exit_code == 0, result.stderr
    export = run / "export"
    assert sorted(path.name for path in export.iterdir()) == [
        "scorer.onnx", "scorer.onnx.json", "scorer.pt", "scorer.pt.json"]
    assert json.loads((export / "scorer.onnx.json").read_text())["format"] == "onnx"
    assert json.loads((export / "scorer.pt.json").read_text())["format"] == "torchscript"


@pytest.mark.usefixtures("wide_console")
def test_export_latest_skips_a_later_failed_run(run_root: Path, tmp_path: Path) -> None:
    """A simulate that failed at once (a bad data dir) leaves a newer folder with only its
    config: ``latest`` for a model still means the last finished run, and exporting that run
    does not change which run is latest."""
    runs = tmp_path / "runs"
    good = copy_run(run_root, runs, "20261129-203748-nbaiot-fed-fedavg")
    status = json.loads((good / "status.json").read_text())
    status.pop("started_at", None)  # go by the id's timestamp
    (good / "status.json").write_text(json.dumps(status))
    failed = runs / "20261129-210000-nbaiot-fed-fedavg"
    failed.mkdir()
    shutil.copy(good / "config.yaml", failed / "config.yaml")
    for _ in range(2):
        result = CliRunner().invoke(cli, ["export", "--run", "latest", "--runs-dir", str(runs),
                                          "--format", "onnx"])
        assert result.exit_code == 0, result.stderr
        assert good.name in result.stdout
    assert create_app(str(failed), runs_dir=runs).state.source.model is None  # pinned: waits
    source = create_app("latest", runs_dir=runs).state.source
    assert source.model is not None and source.model.run_id == good.name
