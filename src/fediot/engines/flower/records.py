"""FedDetect's tasks and reports as Flower records, and back.

Weights travel in ``ArrayRecord``s; summable statistics and counts in ``MetricRecord``s (so a
server can sum them); settings such as the threshold in ``ConfigRecord``s. One pair of
functions per message kind; every decoder checks what it reads.

A reply also carries the device's log lines of the call (``logs``: a ``ConfigRecord`` of
parallel lists, absent when there are none). A device that refused its task sends a
``refusal`` record with the reason instead of a result.

A reply comes from a device the server does not control: :func:`decode_reply` and
:func:`decode_logs` never raise anything but :class:`ReplyError` on a malformed or mutated
reply (the pool turns it into a rejected reply for the node's device), and they never take
the device from the reply: the pool binds a reply to the device of the node that sent it.

A model's arrays travel as one flat float32 vector plus their shapes: Flower stores and sends
every array as an object of its own with a header and a content hash, which cost 4.8 % of the
model's size with the autoencoder's sixteen arrays (``bench/bench_flower.py``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, MetricRecord, RecordDict
from flwr.supercore.inflatable.inflatable_object import (
    InflatableObject,
    get_all_nested_objects,
)

from fediot.core.errors import FediotError
from fediot.core.federated.messages import (
    DataReport,
    EvaluateTask,
    EvaluationReport,
    FitReport,
    FitTask,
    LogLine,
    ModelState,
    Refusal,
    ScalerReport,
    ScoreTask,
    SystemStats,
    Weights,
)
from fediot.core.federated.secure_aggregation import (
    MASK_DTYPE,
    SECURE_STEPS,
    SecAggReply,
    SecAggTask,
)
from fediot.core.metrics import ClassCounts
from fediot.core.model import ErrorStats, ScalerStats

MESSAGE_TYPES = {
    "scaler_stats": "query.scaler_stats",
    "fit": "train",
    "threshold_stats": "query.threshold_stats",
    "evaluate": "evaluate",
    "identify": "query.identify",
    "secagg": "query.secagg",
}
"""Client method → Flower message type (``<category>[.<action>]``)."""


class RecordError(FediotError):
    """A Flower message lacks a record or holds the wrong kind of value."""


class ReplyError(RecordError):
    """A device's reply cannot be read (missing, malformed or out-of-range records)."""


MAX_REASON_CHARS = 500
"""A refusal's reason is cut to this many characters."""


def content_bytes(content: InflatableObject) -> int:
    """The size of a message's content (or of one of its records) as Flower sends it: the
    summed length of every serialised (deflated) object it is made of — records, arrays and
    the record dict."""
    return sum(len(obj.deflate()) for obj in get_all_nested_objects(content).values())


def _get(content: RecordDict, key: str, kind: type[Any]) -> Any:
    record = content.get(key) if key in content else None
    if not isinstance(record, kind):
        raise RecordError(f"message lacks {kind.__name__} {key!r} (has {sorted(content)})")
    return record


def put_weights(content: RecordDict, key: str, weights: Weights) -> None:
    """Store ``weights`` under ``key`` as one flat float32 array and ``key.shapes``."""
    flat = np.concatenate([np.asarray(w, dtype=np.float32).ravel() for w in weights])
    content[key] = ArrayRecord(numpy_ndarrays=[flat])
    content[f"{key}.shapes"] = ConfigRecord({
        "ndims": [int(np.ndim(w)) for w in weights],
        "dims": [int(d) for w in weights for d in np.shape(w)],
    })


def get_weights(content: RecordDict, key: str) -> Weights:
    """Inverse of :func:`put_weights`; the shapes must account for every value."""
    arrays = _get(content, key, ArrayRecord).to_numpy_ndarrays()
    shapes = _get(content, f"{key}.shapes", ConfigRecord)
    if len(arrays) != 1:
        raise RecordError(f"record {key!r} holds {len(arrays)} arrays, expected 1 flat vector")
    flat = np.asarray(arrays[0], dtype=np.float32)
    ndims = [int(n) for n in shapes["ndims"]]
    dims = [int(d) for d in shapes["dims"]]
    if sum(ndims) != len(dims):
        raise RecordError(f"record {key!r}.shapes: ndims {ndims} do not match dims {dims}")
    weights: Weights = []
    start = dim_at = 0
    for ndim in ndims:
        shape = tuple(dims[dim_at: dim_at + ndim])
        dim_at += ndim
        size = int(np.prod(shape, dtype=np.int64))
        if start + size > flat.size:
            raise RecordError(f"record {key!r}: shapes need more than its {flat.size} values")
        weights.append(flat[start: start + size].reshape(shape))
        start += size
    if start != flat.size:
        raise RecordError(f"record {key!r}: {flat.size - start} values beyond its shapes")
    return weights


# --- the global model ------------------------------------------------------------------

def put_model(content: RecordDict, model: ModelState) -> None:
    put_weights(content, "model.weights", model.weights)
    content["model.scaler"] = MetricRecord(model.scaler.to_dict())


def get_model(content: RecordDict) -> ModelState:
    weights = get_weights(content, "model.weights")
    scaler = ScalerStats.from_dict(dict(_get(content, "model.scaler", MetricRecord)))
    return ModelState(weights, scaler)


# --- tasks (server → device) -------------------------------------------------------------

def _pack(value: Any) -> Any:
    """A secure-aggregation payload as JSON: bytes as ``{"$b": hex}``."""
    if isinstance(value, bytes | bytearray):
        return {"$b": bytes(value).hex()}
    if isinstance(value, dict):
        return {str(k): _pack(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_pack(v) for v in value]
    return value


def _unpack(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b"}:
            return bytes.fromhex(value["$b"])
        return {str(k): _unpack(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_unpack(v) for v in value]
    return value


def _payload_bytes(payload: dict[str, Any]) -> bytes:
    return json.dumps(_pack(payload), separators=(",", ":")).encode()


def _payload_from(data: Any) -> dict[str, Any]:
    if not isinstance(data, bytes) or len(data) > MAX_SECAGG_PAYLOAD:
        raise ReplyError("secure aggregation payload missing or too large")
    value = _unpack(json.loads(data))
    if not isinstance(value, dict):
        raise ReplyError("secure aggregation payload is not a mapping")
    return value


MAX_SECAGG_PAYLOAD = 64 << 20
"""Largest secure-aggregation payload read (keys and shares of every device: small)."""


def encode_task(method: str, task: Any) -> RecordDict:
    """The message content of ``task`` for client ``method``."""
    content = RecordDict()
    if method == "secagg":
        assert isinstance(task, SecAggTask)
        if task.inner is not None:  # the task of the step whose result is masked
            content = encode_task(str(task.payload["step"]), task.inner)
        content["secagg"] = ConfigRecord({"stage": task.stage,
                                          "server-round": task.server_round,
                                          "payload": _payload_bytes(task.payload)})
        return content
    if method in ("scaler_stats", "identify"):
        return content
    if method == "fit":
        assert isinstance(task, FitTask)
        put_model(content, task.model)
        content["config"] = ConfigRecord({
            "server-round": task.server_round, "lr": task.learning_rate, "epochs": task.epochs,
            "batch-size": task.batch_size, "optimizer": task.optimizer,
            "weight-decay": task.weight_decay, "proximal-mu": task.proximal_mu,
            "seed": task.seed,
        })
        return content
    if method == "threshold_stats":
        assert isinstance(task, ScoreTask)
        put_model(content, task.model)
        return content
    if method == "evaluate":
        assert isinstance(task, EvaluateTask)
        put_model(content, task.model)
        content["config"] = ConfigRecord({"threshold": task.threshold, "window": task.window,
                                          "max-window": task.max_window})
        return content
    raise RecordError(f"no message kind for client method {method!r}")


def decode_task(method: str, content: RecordDict) -> Any:
    """Inverse of :func:`encode_task`."""
    if method in ("scaler_stats", "identify"):
        return None
    if method == "secagg":
        record = _get(content, "secagg", ConfigRecord)
        stage = str(record["stage"])
        payload = _payload_from(record["payload"])
        inner = None
        if stage == "mask":
            step = payload.get("step")
            if step not in SECURE_STEPS:
                raise RecordError(f"secure aggregation of unknown step {str(step)[:30]!r}")
            inner = decode_task(step, content)
        return SecAggTask(stage, int(record["server-round"]), payload, inner)
    if method == "threshold_stats":
        return ScoreTask(get_model(content))
    config = _get(content, "config", ConfigRecord)
    if method == "fit":
        return FitTask(
            model=get_model(content), server_round=int(config["server-round"]),
            learning_rate=float(config["lr"]), epochs=int(config["epochs"]),
            batch_size=int(config["batch-size"]), optimizer=str(config["optimizer"]),
            weight_decay=float(config["weight-decay"]),
            proximal_mu=float(config["proximal-mu"]), seed=int(config["seed"]),
        )
    if method == "evaluate":
        return EvaluateTask(get_model(content), float(config["threshold"]),
                            int(config["window"]), int(config["max-window"]))
    raise RecordError(f"no message kind for client method {method!r}")


# --- reports (device → server) -----------------------------------------------------------

def _system(stats: SystemStats) -> MetricRecord:
    return MetricRecord({"wall-seconds": stats.wall_seconds, "cpu-seconds": stats.cpu_seconds,
                         "task-peak-memory-bytes": stats.task_peak_memory_bytes,
                         "peak-rss-bytes": stats.peak_rss_bytes})


def _get_system(content: RecordDict) -> SystemStats:
    record = _get(content, "system", MetricRecord)
    return SystemStats(_float(record["wall-seconds"], "wall-seconds"),
                       _float(record["cpu-seconds"], "cpu-seconds"),
                       _int(record["task-peak-memory-bytes"], "task-peak-memory-bytes"),
                       _int(record["peak-rss-bytes"], "peak-rss-bytes"))


def _counts(counts: ClassCounts) -> MetricRecord:
    flat: dict[str, int] = {}
    for name, entry in counts.to_dict().items():
        flat[f"{name}.flagged"] = entry["flagged"]
        flat[f"{name}.total"] = entry["total"]
    return MetricRecord(flat)  # type: ignore[arg-type]


def _get_counts(record: MetricRecord) -> ClassCounts:
    nested: dict[str, dict[str, Any]] = {}
    for key, value in record.items():
        name, _, field = key.rpartition(".")
        nested.setdefault(name, {})[field] = _int(value, f"count {key}")
    return ClassCounts.from_dict(nested)


def _put_logs(content: RecordDict, lines: Sequence[LogLine]) -> None:
    if lines:  # the device is the reply's; a missing round travels as -1
        content["logs"] = ConfigRecord({
            "time": [line.time for line in lines],
            "round": [-1 if line.round is None else line.round for line in lines],
            "step": [line.step for line in lines],
            "level": [line.level for line in lines],
            "message": [line.message for line in lines],
        })


def decode_logs(content: RecordDict, device: str | None = None) -> tuple[LogLine, ...]:
    """The log lines a reply carries (none when it has no ``logs`` record), tagged with
    ``device`` (default: the client id the reply names; a server passes the device of the
    node that sent it). A malformed record is a :class:`ReplyError`."""
    try:
        return _decode_logs(content, device)
    except ReplyError:
        raise
    except Exception as error:  # anything a mutated record can raise
        raise ReplyError(f"unreadable log lines: {_describe(error)}") from None


def _decode_logs(content: RecordDict, device: str | None) -> tuple[LogLine, ...]:
    if "logs" not in content:
        return ()
    record = _get(content, "logs", ConfigRecord)
    device = reply_client_id(content) if device is None else device
    columns: dict[str, list[Any]] = {}
    for key in ("time", "round", "step", "level", "message"):
        value = record.get(key)
        if not isinstance(value, list):
            raise RecordError(f"record 'logs' lacks the list {key!r} (has {sorted(record)})")
        columns[key] = value
    lengths = {key: len(value) for key, value in columns.items()}
    if len(set(lengths.values())) != 1:
        raise RecordError(f"record 'logs': lists of different lengths {lengths}")
    return tuple(
        LogLine(time=str(time), device=device, round=None if int(number) < 0 else int(number),
                step=str(step), level=str(level), message=str(message))
        for time, number, step, level, message in zip(
            columns["time"], columns["round"], columns["step"], columns["level"],
            columns["message"], strict=True))


def encode_reply(method: str, client_id: str, result: Any,
                 logs: Sequence[LogLine] = ()) -> RecordDict:
    """The reply content carrying ``result`` of client ``method`` and the device's ``logs``."""
    content = RecordDict()
    content["device"] = ConfigRecord({"client-id": client_id})
    _put_logs(content, logs)
    if method == "identify":
        return content
    if isinstance(result, Refusal):
        content["refusal"] = ConfigRecord({"reason": str(result.reason)[:MAX_REASON_CHARS]})
        return content
    if method == "scaler_stats":
        assert isinstance(result, ScalerReport)
        content["scaler"] = MetricRecord(result.stats.to_dict())
        content["data"] = MetricRecord(result.data.to_dict())  # type: ignore[arg-type]
    elif method == "threshold_stats":
        assert isinstance(result, ErrorStats)
        content["errors"] = MetricRecord(result.to_dict())
    elif method == "fit":
        assert isinstance(result, FitReport)
        put_weights(content, "weights", result.weights)
        _put_fit_metrics(content, result)
    elif method == "secagg":
        assert isinstance(result, SecAggReply)
        record = ConfigRecord({"stage": result.stage, "payload": _payload_bytes(result.payload)})
        if result.masked is not None:
            record["masked"] = np.asarray(result.masked, MASK_DTYPE).tobytes()
        content["secagg"] = record
        if isinstance(result.report, FitReport):
            _put_fit_metrics(content, result.report)
        elif isinstance(result.report, DataReport):
            content["data"] = MetricRecord(result.report.to_dict())  # type: ignore[arg-type]
    elif method == "evaluate":
        assert isinstance(result, EvaluationReport)
        content["counts"] = _counts(result.counts)
        content["counts-window"] = _counts(result.counts_window)
        content["benign-errors"] = MetricRecord(result.benign_errors.to_dict())
        content["attack-errors"] = MetricRecord(result.attack_errors.to_dict())
        content["config"] = ConfigRecord({"threshold": result.threshold,
                                          "window": result.window})
        content["system"] = _system(result.system)
    else:
        raise RecordError(f"no message kind for client method {method!r}")
    return content


def _put_fit_metrics(content: RecordDict, result: FitReport) -> None:
    content["metrics"] = MetricRecord({"num-examples": result.num_examples,
                                       "loss": result.mean_loss,
                                       "validation-loss": result.validation_loss,
                                       "validation-rows": result.validation_rows})
    content["system"] = _system(result.system)


def _fit_metrics(content: RecordDict, client_id: str, weights: Weights) -> FitReport:
    metrics = _get(content, "metrics", MetricRecord)
    return FitReport(client_id, weights, _int(metrics["num-examples"], "num-examples"),
                     _float(metrics["loss"], "loss"), _get_system(content),
                     validation_loss=_float(metrics["validation-loss"], "validation-loss"),
                     validation_rows=_int(metrics["validation-rows"], "validation-rows"))


def _data_report(content: RecordDict) -> DataReport:
    data = _get(content, "data", MetricRecord)
    return DataReport(**{key: _int(data[key], f"data {key}")
                         for key in ("train", "opt", "warmup_train", "warmup_opt")})


def reply_client_id(content: RecordDict) -> str:
    """The client id a reply names (a :class:`ReplyError` when it names none)."""
    try:
        value = _get(content, "device", ConfigRecord).get("client-id")
    except ReplyError:
        raise
    except Exception as error:
        raise ReplyError(f"unreadable device record: {_describe(error)}") from None
    if not isinstance(value, str) or not value:
        raise ReplyError(f"the reply names no device (client-id {value!r:.60})")
    return value


def _describe(error: Exception) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _int(value: Any, what: str) -> int:
    """An integer record value (a bool, a float or a string is a :class:`ReplyError`)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ReplyError(f"{what} must be an integer, got {type(value).__name__}")
    return value


def _float(value: Any, what: str) -> float:
    """A number record value (a bool or a string is a :class:`ReplyError`)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ReplyError(f"{what} must be a number, got {type(value).__name__}")
    return float(value)


def decode_reply(method: str, content: RecordDict, client_id: str | None = None) -> Any:
    """Inverse of :func:`encode_reply`: the result, or a :class:`Refusal` when the device
    refused the task. ``client_id`` is the device the reply is bound to (default: the one
    it names, :func:`reply_client_id`). Anything malformed is a :class:`ReplyError`, never
    another exception."""
    try:
        return _decode_reply(method, content, client_id)
    except ReplyError:
        raise
    except Exception as error:  # KeyError, TypeError, ValueError, OverflowError, …
        raise ReplyError(f"unreadable {method} reply: {_describe(error)}") from None


def _decode_reply(method: str, content: RecordDict, client_id: str | None) -> Any:
    named = reply_client_id(content)
    client_id = named if client_id is None else client_id
    if method == "identify":
        return named
    if "refusal" in content:
        reason = _get(content, "refusal", ConfigRecord).get("reason")
        return Refusal(str(reason)[:MAX_REASON_CHARS] if isinstance(reason, str)
                       else "refused, without a reason")
    if method == "scaler_stats":
        return ScalerReport(ScalerStats.from_dict(dict(_get(content, "scaler", MetricRecord))),
                            _data_report(content))
    if method == "threshold_stats":
        return ErrorStats.from_dict(dict(_get(content, "errors", MetricRecord)))
    if method == "fit":
        return _fit_metrics(content, client_id, get_weights(content, "weights"))
    if method == "secagg":
        record = _get(content, "secagg", ConfigRecord)
        masked = record.get("masked")
        if masked is not None and (not isinstance(masked, bytes) or len(masked) % 8):
            raise ReplyError("masked vector is not a whole number of 64-bit words")
        report: FitReport | DataReport | None = None
        if "metrics" in content:
            report = _fit_metrics(content, client_id, [])
        elif "data" in content:
            report = _data_report(content)
        return SecAggReply(
            str(record["stage"]), _payload_from(record["payload"]),
            None if masked is None else np.frombuffer(masked, MASK_DTYPE).copy(), report)
    if method == "evaluate":
        config = _get(content, "config", ConfigRecord)
        return EvaluationReport(
            client_id=client_id,
            counts=_get_counts(_get(content, "counts", MetricRecord)),
            counts_window=_get_counts(_get(content, "counts-window", MetricRecord)),
            benign_errors=ErrorStats.from_dict(dict(_get(content, "benign-errors",
                                                         MetricRecord))),
            attack_errors=ErrorStats.from_dict(dict(_get(content, "attack-errors",
                                                         MetricRecord))),
            threshold=_float(config["threshold"], "threshold"),
            window=_int(config["window"], "window"), system=_get_system(content),
        )
    raise RecordError(f"no message kind for client method {method!r}")
