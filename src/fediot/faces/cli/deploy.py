"""``fediot server``, ``fediot client`` and ``fediot certs``: FedIoT over a real Flower
deployment, TLS and SuperNode authentication on by default.

The server reads its certificates folder (default ``certs/``: ca.crt, server.pem, server.key,
devices/*.pub); a device reads the CA certificate and its own key. ``--insecure`` (plain HTTP,
no node authentication) is accepted on loopback addresses only, with a warning. A device runs
its tasks in one warm worker (:mod:`fediot.engines.flower.worker`) unless ``--worker
subprocess``, and names the cause when it stops (:mod:`fediot.engines.flower.device_log`).
"""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from rich.markup import escape

from fediot.core.catalog import DEVICES, device_by_id
from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.evaluation import EvaluationSummary
from fediot.core.model.backend import resolve_backend
from fediot.engines.addresses import is_loopback
from fediot.engines.flower import certificates as tls
from fediot.engines.flower import deployment, device_log, session
from fediot.engines.flower.device_node import DeviceNode
from fediot.engines.run_folder import RunFolder, RunView, describe_excluded, excluded_devices
from fediot.faces.cli.app import app, console, err_console, fail
from fediot.faces.cli.dashboard import (
    DashboardHostOption,
    DashboardOption,
    ExitWhenDoneOption,
    live_dashboard,
)
from fediot.faces.cli.lazy import command, group_help
from fediot.faces.cli.runs_common import ConfigOption, SetOption, resolve_config, results_table

certs_app = typer.Typer(help=group_help("certs"), no_args_is_help=True)
app.add_typer(certs_app, name="certs")

DEFAULT_CERTIFICATES = Path("certs")

CertsDirOption = Annotated[Path, typer.Option(
    "--dir", help="the certificates folder (created 0700, with a .gitignore of *)")]
ForceOption = Annotated[bool, typer.Option(
    "--force", help="replace an existing key (what it signed or identified stops working)")]
InsecureOption = Annotated[bool, typer.Option(
    "--insecure", help="plain HTTP, no node authentication: loopback addresses only")]


def _stop_on_sigterm() -> None:
    """SIGTERM ends a command as Ctrl-C does, so the Flower processes it started are stopped
    (they run in their own sessions and would outlive it)."""
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def _warn_insecure() -> None:
    err_console.print("[bold yellow]WARNING: --insecure: no TLS and no node authentication; "
                      "anything on this machine can join or read the federation. Loopback "
                      "tests only.[/]", soft_wrap=True)


def _server_security(host: str, insecure: bool, certificates: Path, node_keys: Path | None
                     ) -> tls.ServerSecurity | None:
    """The SuperLink's security, or None for --insecure on loopback; one clear error else."""
    if insecure:
        deployment.require_tls_outside_loopback(host, secure=False)
        _warn_insecure()
        return None
    if not (certificates / tls.SERVER_CERTIFICATE).exists():
        where = ("is not a loopback address, so TLS is required"
                 if not is_loopback(host) else "needs TLS unless --insecure")
        raise FediotError(
            f"{host} {where}, and {certificates.resolve()} holds no server certificate "
            f"({tls.SERVER_CERTIFICATE}): create one with `scripts/make-certs.sh "
            f"{certificates} {tls.local_host(host)}` or pass --certificates DIR")
    return tls.ServerSecurity.load(certificates, host, node_keys)


def _node_security(host: str, insecure: bool, root_certificates: Path, node_key: Path
                   ) -> tls.NodeSecurity | None:
    """The SuperNode's security, or None for --insecure on loopback; one clear error else."""
    if insecure:
        deployment.require_tls_outside_loopback(host, secure=False)
        _warn_insecure()
        return None
    if not root_certificates.exists():
        raise FediotError(
            f"{root_certificates}: no CA certificate; copy ca.crt and devices/device-N.key "
            "from the server's certificates folder (--root-certificates, --node-key)")
    return tls.NodeSecurity.load(root_certificates, node_key)


@command(app, "server")
def server_command(
    config: ConfigOption = Path("config/fedml_config.yaml"),
    host: Annotated[str, typer.Option(help="address the SuperLink listens on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="the SuperLink's port")] = 9092,
    certificates: Annotated[Path, typer.Option(
        help="ca.crt, server.pem, server.key and devices/*.pub")] = DEFAULT_CERTIFICATES,
    node_keys: Annotated[Path | None, typer.Option(
        help="folder of the admitted devices' public keys (*.pub) [default: "
             "CERTIFICATES/devices]")] = None,
    insecure: InsecureOption = False,
    flwr_home: Annotated[Path, typer.Option(help="the server's Flower state folder")] = Path(
        ".flwr/server"),
    wait: Annotated[float, typer.Option(help="seconds to wait for the devices")] = 300.0,
    timeout: Annotated[float, typer.Option(help="seconds the whole run may take")] = 3600.0,
    enrol_timeout: Annotated[float, typer.Option(
        help="seconds registering every device key may take")] = deployment.ENROL_TIMEOUT_SECONDS,
    superlink_timeout: Annotated[float, typer.Option(
        help="seconds a started SuperLink may take to listen")] = (
        deployment.SUPERLINK_WAIT_SECONDS),
    set_: SetOption = None,
    resume: Annotated[Path | None, typer.Option(
        help="continue the interrupted run in this run folder (its own config applies)")] = None,
    stop_stale: Annotated[bool, typer.Option(
        "--stop-stale", help="stop what an earlier server session left running in "
                             "--flwr-home (after a crash), then exit")] = False,
    dashboard: DashboardOption = None, dashboard_host: DashboardHostOption = "127.0.0.1",
    exit_when_done: ExitWhenDoneOption = False,
) -> None:
    """With --dashboard the dashboard keeps showing the finished run until Ctrl-C, unless
    --exit-when-done. One session per --flwr-home: a start refuses while an earlier session's
    processes live (--stop-stale stops them)."""
    _stop_on_sigterm()
    home = flwr_home.resolve()
    if stop_stale:
        try:
            stopped = session.stop_session(home)
        except FediotError as error:
            raise fail(str(error)) from None
        console.print(f"stopped {session.describe(stopped)}" if stopped
                      else f"nothing of an earlier session runs in {home}", soft_wrap=True)
        return
    with ExitStack() as dashboard_serving:  # holds the dashboard open past the table
        try:
            cfg = RunFolder(resume).load_config() if resume else resolve_config(config, {}, set_)
            if cfg.common_args.training_type != "cross_silo":
                raise FediotError("common_args.training_type: the server runs 'cross_silo' "
                                  "(real devices); 'simulation' runs with fediot simulate")
            security = _server_security(host, insecure, certificates, node_keys)
            runs_dir = Path(cfg.tracking_args.log_file_dir).expanduser().resolve()
            cfg = cfg.with_overrides({"tracking_args.log_file_dir": str(runs_dir)})
            local = tls.local_host(host)
            lock = session.ServerSession.acquire(
                home, f"fediot server --stop-stale --flwr-home {home}")
            try:
                deployment.require_free_port(host, port, "the SuperLink")
                if resume is not None:
                    _wait_for_run_owner(resume)
                status, started = _serve(
                    cfg, home, host, local, port, security, lock,
                    resume=resume, wait=wait, timeout=timeout, enrol_timeout=enrol_timeout,
                    superlink_timeout=superlink_timeout,
                    start_dashboard=lambda: dashboard_serving.enter_context(
                        live_dashboard(runs_dir, dashboard, dashboard_host, exit_when_done)))
            finally:
                lock.release()
        except FediotError as error:
            raise fail(str(error)) from None
        state = str(status.get("status", "?"))
        if state != "finished:completed":
            raise fail(f"the run ended as {state}: {status.get('status-details', '')} "
                       f"(logs in {home / 'logs'})")
        folders = sorted((p for p in runs_dir.glob("*") if (p / "results.json").exists()
                          and p.stat().st_mtime >= started), key=lambda p: p.stat().st_mtime)
        if not folders:
            raise fail(f"the run completed but left no results in {runs_dir}")
        recorded = json.loads((folders[-1] / "results.json").read_text())
        results = recorded["evaluation"]
        summary = EvaluationSummary(results["devices"], results["pooled"])
        table, width = results_table(summary, "federated over Flower (deployment)", console)
        console.print(table, width=width)
        left_out = describe_excluded(excluded_devices(recorded))
        if left_out:
            console.print(f"[yellow]{escape(left_out)}[/]", highlight=False)
        traffic = status.get("network-traffic", {})
        console.print(f"run {status.get('run-id')}: {state}, {status.get('elapsed', 0):.0f} s, "
                      f"{traffic.get('total-bytes', 0):,} bytes; run folder: {folders[-1]}")


RUN_OWNER_GRACE_SECONDS = 10.0
"""How long a resume waits for the crashed session's ServerApp to end (it exits within a
second of its SuperLink, watching its parent)."""


def _wait_for_run_owner(run: Path) -> None:
    """Return once no live process records ``run`` (a crashed session's ServerApp may still be
    ending); one clear error if one still does after :data:`RUN_OWNER_GRACE_SECONDS`."""
    deadline = time.monotonic() + RUN_OWNER_GRACE_SECONDS
    while True:
        status = RunView(run).status() or {}
        if status.get("state") not in ("running", "starting"):
            return
        if time.monotonic() > deadline:
            owner = status.get("owner") or {}
            raise FediotError(f"{run}: still being run by pid {owner.get('pid', '?')}; stop "
                              "that server first")
        time.sleep(0.5)


def _serve(cfg: Config, home: Path, host: str, local: str, port: int,
           security: tls.ServerSecurity | None, lock: session.ServerSession, *,
           resume: Path | None, wait: float, timeout: float, enrol_timeout: float,
           superlink_timeout: float, start_dashboard: Callable[[], object]
           ) -> tuple[dict[str, Any], float]:
    """One server session in the locked ``home``: enrol the keys, start the SuperLink, run;
    returns the run's ``flwr ls`` record and the time the run was submitted."""
    deployment.protect_state(home)
    if resume is None:
        # a fresh session forgets every node (a deleted key is revoked); a resumed one keeps
        # them, so devices that outlived the old server reconnect under their ids
        deployment.reset_state(home)
    if security is not None:
        admitted = deployment.enrol_nodes(
            home, security, timeout=enrol_timeout, superlink_timeout=superlink_timeout,
            on_start=lambda link: lock.record("enrolment superlink", link.pid))
        console.print(f"admitted {len(admitted)} device keys: {', '.join(admitted)}",
                      soft_wrap=True)
    deployment.write_federation(home, "fediot", deployment.join_address(local, port),
                                security.ca_certificate if security else None)
    start_dashboard()
    link = deployment.superlink(home, port, host=host, security=security).start()
    lock.record("superlink", link.pid)
    mode = "TLS + node authentication" if security else "INSECURE"
    console.print(f"SuperLink on {deployment.join_address(host, port)} ({mode}, pid "
                  f"{link.pid}); waiting for {cfg.train_args.client_num_in_total} devices for "
                  f"up to {wait:.0f} s: start them with ./run_client.sh N", soft_wrap=True)
    started = time.time()
    try:
        deployment.wait_for_port(local, port, superlink_timeout, "the SuperLink", link)
        status = deployment.submit_run(home, "fediot", cfg, wait_seconds=wait, timeout=timeout,
                                       log_path=home / "logs" / "run.log", resume_from=resume)
    finally:
        link.stop()
    return status, started


WORKER_MODES = ("warm", "subprocess")
"""``fediot client --worker``: one long-lived FedIoT worker runs every task (warm), or Flower's
SuperExec starts one ``flwr-clientapp`` process per task (subprocess)."""

@command(app, "client")
def client_command(
    device: Annotated[int, typer.Option(help="N-BaIoT device id, 1–9")],
    server: Annotated[str, typer.Option(help="the SuperLink, host:port")] = "127.0.0.1:9092",
    data_dir: Annotated[str, typer.Option(help="this device's data (default: the run's)")] = "",
    port: Annotated[int, typer.Option(help="this SuperNode's own local port")] = 0,
    root_certificates: Annotated[Path | None, typer.Option(
        help="the CA certificate [default: certs/ca.crt]")] = None,
    node_key: Annotated[Path | None, typer.Option(
        help="this device's private key [default: certs/devices/device-N.key]")] = None,
    insecure: InsecureOption = False,
    flwr_home: Annotated[Path | None, typer.Option(help="this device's Flower state")] = None,
    wait: Annotated[float, typer.Option(help="seconds to keep retrying the server")] = 3600.0,
    backend: Annotated[str, typer.Option(
        help="train with auto, torch or numpy [default: the run's device_args.backend]")] = "",
    worker: Annotated[str, typer.Option(
        help="warm: one long-lived worker runs every task, data loaded once; subprocess: "
             "Flower starts a process per task")] = "warm",
) -> None:
    # its help is its line in fediot.faces.cli.lazy.COMMANDS
    _stop_on_sigterm()
    try:
        name = device_by_id(device).name
        if backend:
            resolve_backend(backend)  # an unknown name, or torch where it is missing: now
    except KeyError as error:
        raise fail(str(error.args[0])) from None
    except FediotError as error:
        raise fail(str(error)) from None
    if worker not in WORKER_MODES:
        raise fail(f"--worker {worker!r}: choose one of {', '.join(WORKER_MODES)}")
    try:
        host, _ = deployment.split_address(server)
        key = node_key or tls.device_key_paths(DEFAULT_CERTIFICATES, device)[0]
        ca = root_certificates or DEFAULT_CERTIFICATES / tls.CA_CERTIFICATE
        security = _node_security(host, insecure, ca, key)
        home = (flwr_home or Path(f".flwr/client-{device}")).resolve()
        device_node = DeviceNode(home, server, name, port or 9100 + device, data_dir,
                                 security, wait, warm=_warm_available(worker), backend=backend,
                                 say=lambda line: console.print(escape(line)))
        device_node.start()
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(f"device {device} ({name}) → {server} (SuperNode pid {device_node.node_pid}, "
                  f"{'TLS + node key' if security else 'INSECURE'}, {device_node.mode}); it "
                  f"retries the server for up to {wait:.0f} s. Log: {device_node.log_path}. "
                  "Ctrl-C stops it.", soft_wrap=True)
    diagnosis: device_log.Diagnosis | None = None
    try:
        while True:
            diagnosis = device_node.watch()
            if diagnosis is None or diagnosis.failure is not device_log.Failure.DROPPED:
                break
            # a new server session forgot this node: join it again (the SuperLink admits the
            # key or refuses it, which the next watch reports)
            why = device_log.explain(diagnosis, server=server, node_key=None,
                                     root_certificates=None)
            console.print(escape(f"device {device}: {why}; joining again"), soft_wrap=True)
            device_node.start()
    except KeyboardInterrupt:
        diagnosis = None
    finally:
        device_node.stop()
    if diagnosis is not None:
        # Flower's words hold brackets ("[code: 2004]", "[SSL: …]"): not markup
        raise fail(escape(device_log.explain(
            diagnosis, server=server, node_key=security.private_key if security else None,
            root_certificates=security.root_certificates if security else None)), 1)
    if device_node.failed_exit is not None:
        raise fail(device_node.failed_exit, 1)


def _warm_available(mode: str) -> bool:
    """True for --worker warm when this Flower has the internals the warm worker drives; a
    one-line warning and Flower's subprocess mode otherwise."""
    if mode != "warm":
        return False
    from fediot.engines.flower import worker as warm

    if warm.UNSUPPORTED is not None:
        err_console.print(f"[bold yellow]warning:[/] warm worker unavailable "
                          f"({warm.UNSUPPORTED}); Flower's subprocess mode runs the tasks",
                          soft_wrap=True)
        return False
    return True


@certs_app.command("ca")
def certs_ca(
    folder: CertsDirOption = DEFAULT_CERTIFICATES,
    days: Annotated[int, typer.Option(help="validity in days")] = 3650,
    force: ForceOption = False,
) -> None:
    """Create the FedIoT CA: DIR/ca.crt and DIR/ca.key (0600; keep it off the devices)."""
    try:
        path = tls.create_ca(folder, days=days, overwrite=force)
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(f"CA certificate {path} (key {folder / tls.CA_KEY})", soft_wrap=True)


@certs_app.command("server")
def certs_server(
    host: Annotated[list[str], typer.Option(
        help="a name or IP devices use to reach the server (repeatable)")],
    folder: CertsDirOption = DEFAULT_CERTIFICATES,
    days: Annotated[int, typer.Option(help="validity in days")] = 825,
) -> None:
    """Create the SuperLink's certificate DIR/server.pem + server.key, signed by DIR's CA; its
    subjectAltNames are the --host values plus localhost, 127.0.0.1 and ::1."""
    try:
        path = tls.create_server_certificate(folder, host, days=days)
    except FediotError as error:
        raise fail(str(error)) from None
    console.print(f"server certificate {path} for {', '.join(host)} (+ loopback)",
                  soft_wrap=True)


@certs_app.command("device")
def certs_device(
    devices: Annotated[list[int] | None, typer.Argument(
        help="device ids [default: every N-BaIoT device]")] = None,
    folder: CertsDirOption = DEFAULT_CERTIFICATES,
    force: ForceOption = False,
    skip_existing: Annotated[bool, typer.Option(
        help="leave a device that already has a key alone")] = False,
) -> None:
    """Create each device's node-authentication key pair DIR/devices/device-N.key (0600) and
    .pub; the server admits the public keys found in DIR/devices."""
    try:
        for number in devices or [d.uci_id for d in DEVICES]:
            private_key, public_key = tls.device_key_paths(folder, number)
            if skip_existing and private_key.exists():
                console.print(f"device {number}: kept {private_key}", soft_wrap=True)
                continue
            tls.create_device_key(folder, number, overwrite=force)
            console.print(f"device {number}: {private_key} (public key {public_key})",
                          soft_wrap=True)
    except FediotError as error:
        raise fail(str(error)) from None
