"""Register device keys with a running SuperLink in one process, skipping the registered ones.

Run as ``python -m fediot.engines.flower.enrolment FEDERATION`` with ``FLWR_HOME`` naming a
Flower home whose ``config.toml`` describes ``FEDERATION`` (see
:func:`fediot.engines.flower.deployment.write_federation`). It reads a JSON object
``{key file name: key file path}`` on stdin, asks the SuperLink which keys it already knows
(``ListNodes``, as ``flwr supernode ls`` does), registers the others one after another
(``RegisterNode``, as ``flwr supernode register`` does) through Flower's own Control API client,
and prints one line: :data:`RESULT_MARK` followed by JSON ``{key file name: node id}`` (or
``{"error": text}``, exit code 1).

One process instead of one ``flwr`` process per key: Flower is imported once (about 1 s, not
once per key side by side), and a key registered by an earlier session of the same state
(``fediot server --resume``) is recognised instead of failing with "Public key already in use".
Flower's CLI helpers used here (``read_superlink_connection``, ``init_http_client_from_connection``,
``try_load_public_key``) are exercised for real by
``tests/engines/test_flower_server_safety.py``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

RESULT_MARK = "FEDIOT-ENROLMENT "
"""Prefix of the result line (Flower prints its own lines to stdout too)."""

NODE_GONE = "unregistered"
"""``NodeInfo.status`` of a key that was registered once and then removed."""


def enrol(federation: str, keys: dict[str, Path]) -> dict[str, int]:
    """``{key file name: node id}`` of every key in ``keys``, registering those the SuperLink
    of ``federation`` does not know yet.

    Parameters
    ----------
    federation
        The SuperLink connection's name in ``$FLWR_HOME/config.toml``.
    keys
        ``{key file name: path of its OpenSSH public key}``.
    """
    # imported here: the parent (fediot server) never imports Flower for this
    from flwr.cli.flower_config import read_superlink_connection
    from flwr.cli.supernode.register import try_load_public_key
    from flwr.cli.utils import init_http_client_from_connection
    from flwr.proto.control_pb2 import ListNodesRequest, RegisterNodeRequest

    client = init_http_client_from_connection(read_superlink_connection(federation))
    try:
        known = {bytes(node.public_key): int(node.node_id)
                 for node in client.ListNodes(ListNodesRequest()).nodes_info
                 if node.status != NODE_GONE}
        nodes: dict[str, int] = {}
        for name, path in keys.items():
            public_key = try_load_public_key(path)
            if public_key in known:
                nodes[name] = known[public_key]
                continue
            response = client.RegisterNode(
                RegisterNodeRequest(public_key=public_key, name=Path(name).stem))
            if not response.node_id:
                raise RuntimeError(f"{path}: the SuperLink registered no node")
            nodes[name] = int(response.node_id)
        return nodes
    finally:
        client.close()


def main(argv: list[str]) -> int:
    """The command line: ``FEDERATION`` as the only argument, the keys as JSON on stdin."""
    result: dict[str, Any]
    try:
        if len(argv) != 1:
            raise ValueError("usage: python -m fediot.engines.flower.enrolment FEDERATION")
        keys = {str(name): Path(path) for name, path in json.loads(sys.stdin.read()).items()}
        result, code = enrol(argv[0], keys), 0
    except SystemExit as stop:  # Flower's helpers exit on a bad key file
        result, code = {"error": f"Flower stopped the enrolment (exit code {stop.code})"}, 1
    except Exception as error:  # one line for the parent to show
        result, code = {"error": f"{type(error).__name__}: {error}"}, 1
    print(RESULT_MARK + json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
