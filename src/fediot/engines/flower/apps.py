"""Flower's ServerApp and ClientApp for FedDetect.

Both call the engine-free core: the ClientApp runs :class:`DeviceClient` methods, the ServerApp
runs :class:`FedDetectServer` over a :class:`FlowerPool`. The configuration is the same checked
YAML as everywhere (passed in by the simulation engine, or as the run config ``config-json``
in a deployment).

A device process loads this module for its ClientApp only: the server's modules (which build
the torch model) are imported inside the ServerApp, so a device without torch can load it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from flwr.app import ConfigRecord, Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fediot.core.config import Config, dump_config, parse_config_text
from fediot.core.errors import FediotError
from fediot.core.federated.client import DeviceClient, DeviceGuards
from fediot.core.federated.devices import DeviceStore, client_ids
from fediot.core.federated.messages import LogLine
from fediot.core.federated.secure_aggregation import SecAggDevice
from fediot.engines.flower.records import decode_task, encode_reply

if TYPE_CHECKING:
    from fediot.core.federated.server import RoundRecord, RunObserver, RunResult, ServerState

log = logging.getLogger("fediot.flower")

SECAGG_STATE = "fediot.secagg"
"""The ``context.state`` record holding a device's secure-aggregation state between the
messages of a round (Flower may start a fresh ClientApp process per message)."""

_CLIENTS: dict[tuple[str, str], DeviceClient] = {}
"""Devices already loaded in this process (a Ray actor serves many messages)."""

_STORES: dict[str, DeviceStore] = {}
"""Per run configuration (its hash), the data of this process's devices: a Ray actor serving
many virtual devices maps each device type's files once, not once per device."""


def _config_from(context: Context, default: Config | None) -> Config:
    """The run's configuration; on a device, its node config's ``data-dir`` says where its
    data lies (the server's path means nothing there) and its ``backend`` what it trains
    with (whether it has torch is the device's business)."""
    text = context.run_config.get("config-json")
    if isinstance(text, str) and text.strip():
        # sent by the server: read under the same limits as a file (size, nesting, aliases)
        config = parse_config_text(text, source="run config config-json")
    elif default is None:
        raise FediotError("no FedIoT configuration: set the run config key config-json")
    else:
        config = default
    data_dir = context.node_config.get("data-dir")
    if isinstance(data_dir, str) and data_dir:
        config = config.with_overrides({"data_args.data_cache_dir": data_dir})
    backend = context.node_config.get("backend")
    if isinstance(backend, str) and backend:
        config = config.with_overrides({"device_args.backend": backend})
    return config


def _client_id(context: Context, config: Config) -> str:
    """The device this node serves: ``device`` in its node config, or its simulation partition."""
    device = context.node_config.get("device")
    if isinstance(device, str) and device:
        return device
    partition = context.node_config.get("partition-id")
    if isinstance(partition, int):
        ids = client_ids(config)
        if not 0 <= partition < len(ids):
            raise FediotError(f"partition-id {partition} outside the run's {len(ids)} devices")
        return ids[partition]
    raise FediotError("node config has neither 'device' nor 'partition-id'")


def _device(context: Context, config: Config) -> DeviceClient:
    client_id = _client_id(context, config)
    config_hash = hashlib.sha256(dump_config(config).encode()).hexdigest()
    key = (config_hash, client_id)
    if key not in _CLIENTS:
        store = _STORES.setdefault(config_hash, DeviceStore(config))
        _CLIENTS[key] = DeviceClient(store.client_data(client_id),
                                     config.device_args.using_gpu,
                                     DeviceGuards.from_config(config),
                                     config.device_args.backend)
    return _CLIENTS[key]


def make_client_app(config: Config | None = None) -> ClientApp:
    """A ClientApp serving one device per node (``config``: the simulation's, else the run's)."""
    app = ClientApp()

    def handler(method: str) -> Callable[[Message, Context], Message]:
        def handle(message: Message, context: Context) -> Message:
            cfg = _config_from(context, config)
            device = _device(context, cfg)
            if method == "identify":
                return Message(encode_reply(method, device.client_id, device.client_id),
                               reply_to=message)
            if method == "secagg":  # the round's protocol state outlives this process
                saved = context.state.config_records.get(SECAGG_STATE)
                if saved is not None and device.secagg_state is None:
                    device.secagg_state = SecAggDevice.from_dict(
                        json.loads(str(saved["state"])))
            reply = device.call(method, decode_task(method, message.content))
            if method == "secagg" and device.secagg_state is not None:
                context.state.config_records[SECAGG_STATE] = ConfigRecord(
                    {"state": json.dumps(device.secagg_state.to_dict())})
            return Message(encode_reply(method, device.client_id, reply.result, reply.logs),
                           reply_to=message)

        return handle

    app.query("identify")(handler("identify"))
    app.query("scaler_stats")(handler("scaler_stats"))
    app.train()(handler("fit"))
    app.query("threshold_stats")(handler("threshold_stats"))
    app.evaluate()(handler("evaluate"))
    app.query("secagg")(handler("secagg"))
    return app


def make_server_app(config: Config | None = None, observer: RunObserver | None = None,
                    results: list[RunResult] | None = None, *,
                    wait_seconds: float = 120.0, resume: ServerState | None = None,
                    checkpoint: Callable[[ServerState], None] | None = None) -> ServerApp:
    """A ServerApp running FedDetect; each finished run's result is appended to ``results``.

    In a deployment (no ``results``), the ServerApp records its own run folder on the server,
    checkpointed every round, with the devices' log lines in ``logs.jsonl`` (and mirrored to
    MLflow when ``tracking_args.mlflow_tracking_uri`` is set); the run config ``resume-from``
    names an interrupted run folder to continue.
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        # the server side, imported here: a device loading this module needs none of it
        from fediot.core.federated.server import FedDetectServer
        from fediot.engines.flower.grid import DEPLOYMENT_PULL_SECONDS, InFlightLimit
        from fediot.engines.flower.pool import FlowerPool
        from fediot.engines.run_folder import RunFolder
        from fediot.engines.strategies import strategy_for
        from fediot.engines.tracking import record_run

        cfg = _config_from(context, config)
        wait = float(context.run_config.get("wait-seconds", wait_seconds))
        devices = client_ids(cfg)
        if results is None:  # a deployment: replies polled every 0.1 s, not Flower's 3 s
            grid = InFlightLimit(grid, len(devices), DEPLOYMENT_PULL_SECONDS)
        pool = FlowerPool(grid, devices, wait_seconds=wait)
        if results is not None:  # an engine in this process records the run
            results.append(FedDetectServer(cfg, observer, strategy_for(cfg)).run(
                pool, resume=resume, checkpoint=checkpoint))
            return
        # a deployment: the ServerApp process records the run folder itself
        resume_from = context.run_config.get("resume-from")
        if isinstance(resume_from, str) and resume_from:
            folder = RunFolder(Path(resume_from))
            state: ServerState | None = folder.load_checkpoint()
        else:
            folder, state = RunFolder.create(cfg, "flower"), None
        log.info("run folder %s", folder.root)
        result = record_run(
            folder, cfg, pool.client_ids,
            lambda recorder, checkpoint: FedDetectServer(cfg, recorder, strategy_for(cfg)).run(
                pool, resume=state, checkpoint=checkpoint),
            observer=_LoggingObserver(), engine="flower")
        log.info("finished: pooled F1 with the window vote %s",
                 result.evaluation.pooled["window_vote"]["f1"])

    return app


class _LoggingObserver:
    """Progress into Flower's log stream (the run folder is written by the checkpoints)."""

    def on_phase(self, phase: str, detail: str) -> None:
        log.info("%s %s", phase, detail)

    def on_round(self, record: RoundRecord) -> None:
        log.info("round %d: %d devices answered, loss %.5f", record.server_round,
                 len(record.answered), record.train_loss)

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        for line in lines:  # the devices' warnings also in Flower's log stream
            if line.level not in ("DEBUG", "INFO"):
                log.warning("%s (%s, round %s): %s", line.device, line.step, line.round,
                            line.message)


client_app = make_client_app()
"""The ClientApp of a deployment (its configuration comes from the run config)."""
server_app = make_server_app()
"""The ServerApp of a deployment."""
