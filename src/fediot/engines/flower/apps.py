"""Flower's ServerApp and ClientApp for FedDetect.

Both call the engine-free core: the ClientApp runs :class:`DeviceClient` methods, the ServerApp
runs :class:`FedDetectServer` over a :class:`FlowerPool`. The configuration is the same checked
YAML as everywhere (passed in by the simulation engine, or as the run config ``config-yaml``
in a deployment).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import yaml
from flwr.app import Context, Message
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from fediot.core.config import Config, dump_config, parse_config
from fediot.core.errors import FediotError
from fediot.core.federated.client import DeviceClient
from fediot.core.federated.devices import client_ids, load_client_data
from fediot.core.federated.server import FedDetectServer, RunObserver, RunResult
from fediot.engines.flower.pool import FlowerPool
from fediot.engines.flower.records import decode_task, encode_reply

_CLIENTS: dict[tuple[str, str], DeviceClient] = {}
"""Devices already loaded in this process (a Ray actor serves many messages)."""


def _config_from(context: Context, default: Config | None) -> Config:
    text = context.run_config.get("config-yaml")
    if isinstance(text, str) and text.strip():
        return parse_config(yaml.safe_load(text), source="run config config-yaml")
    if default is None:
        raise FediotError("no FedIoT configuration: set the run config key config-yaml")
    return default


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
    key = (hashlib.sha256(dump_config(config).encode()).hexdigest(), client_id)
    if key not in _CLIENTS:
        _CLIENTS[key] = DeviceClient(load_client_data(config, client_id),
                                     config.device_args.using_gpu)
    return _CLIENTS[key]


def make_client_app(config: Config | None = None) -> ClientApp:
    """A ClientApp serving one device per node (``config``: the simulation's, else the run's)."""
    app = ClientApp()

    def handler(method: str) -> Callable[[Message, Context], Message]:
        def handle(message: Message, context: Context) -> Message:
            cfg = _config_from(context, config)
            device = _device(context, cfg)
            if method == "identify":
                result: Any = device.client_id
            else:
                task = decode_task(method, message.content)
                function = getattr(device, method)
                result = function() if task is None else function(task)
            return Message(encode_reply(method, device.client_id, result), reply_to=message)

        return handle

    app.query("identify")(handler("identify"))
    app.query("scaler_stats")(handler("scaler_stats"))
    app.train()(handler("fit"))
    app.query("threshold_stats")(handler("threshold_stats"))
    app.evaluate()(handler("evaluate"))
    return app


def make_server_app(config: Config | None = None, observer: RunObserver | None = None,
                    results: list[RunResult] | None = None, *,
                    wait_seconds: float = 120.0) -> ServerApp:
    """A ServerApp running FedDetect; each finished run's result is appended to ``results``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        cfg = _config_from(context, config)
        pool = FlowerPool(grid, client_ids(cfg), wait_seconds=wait_seconds)
        result = FedDetectServer(cfg, observer).run(pool)
        if results is not None:
            results.append(result)

    return app


client_app = make_client_app()
"""The ClientApp of a deployment (its configuration comes from the run config)."""
server_app = make_server_app()
"""The ServerApp of a deployment."""
