"""``fediot serve`` (the scoring API over a run's global model) and ``fediot export`` (the model
as one TorchScript or ONNX graph for edge runtimes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fediot.core.catalog import FEATURE_NAMES, N_FEATURES
from fediot.core.errors import FediotError
from fediot.core.formats import EXPORT_FORMATS, EXPORT_SUFFIXES
from fediot.core.limits import MAX_SCORE_ROWS
from fediot.engines.run_folder import find_run
from fediot.faces.access import binding_problem
from fediot.faces.cli.app import app, console, fail
from fediot.faces.cli.lazy import command

if TYPE_CHECKING:  # torch, FastAPI: loaded once the options are checked
    from fediot.faces.serve.models import LoadedModel

RunOption = Annotated[str, typer.Option(
    "--run", help="run folder, id, unique id prefix, or 'latest'")]
RunsDirOption = Annotated[Path, typer.Option("--runs-dir", help="where run folders are")]


@command(app, "serve")
def serve_command(
    run: RunOption = "latest",
    runs_dir: RunsDirOption = Path("runs"),
    host: Annotated[str, typer.Option(
        help="address to listen on; a non-loopback one needs --token")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    device: Annotated[str | None, typer.Option(
        help="device whose threshold applies when a request names none "
             "(default: the run's global threshold)")] = None,
    max_body_mb: Annotated[float, typer.Option(
        help="largest /score body in MiB (larger → 413)")] = 64.0,
    max_rows: Annotated[int, typer.Option(
        help="most rows per /score request (more → 413)")] = MAX_SCORE_ROWS,
    token: Annotated[str | None, typer.Option(
        help="require 'Authorization: Bearer TOKEN' (at least 16 characters) in every request",
        envvar="FEDIOT_SERVE_TOKEN")] = None,
    reload_interval: Annotated[float, typer.Option(
        help="seconds between two looks for a newer model")] = 1.0,
    threads: Annotated[int, typer.Option(
        help="torch threads per scoring call; concurrent requests add parallelism")] = 1,
) -> None:
    """A newer model saved in the run folder (or, with --run latest, a later run's model) is
    picked up without a restart. Without --token only loopback addresses may be bound, and
    only requests addressed to a loopback name are answered.
    """
    import uvicorn  # only the server needs it

    if not 0 < port < 65536:
        raise fail(f"--port must be in 1–65535; got {port}")
    if not max_body_mb > 0:
        raise fail(f"--max-body-mb must be > 0; got {max_body_mb}")
    if max_rows < 1:
        raise fail(f"--max-rows must be ≥ 1; got {max_rows}")
    problem = binding_problem(host, token, "the scoring API")
    if problem:
        raise fail(problem)
    if threads < 1:
        raise fail(f"--threads must be ≥ 1; got {threads}")
    import torch

    from fediot.faces.serve import create_app

    # One thread per call by default: the server's threadpool scores requests side by side, and
    # intra-op threads on top of that oversubscribe the CPUs (OpenMP then spins: measured 25×
    # the CPU time of one thread on a busy 2-CPU machine).
    torch.set_num_threads(threads)
    try:
        application = create_app(run, runs_dir=runs_dir, device=device,
                                 max_body_bytes=int(max_body_mb * 1024 * 1024),
                                 max_rows=max_rows, check_interval=reload_interval,
                                 token=token)
    except FediotError as error:
        raise fail(str(error)) from None
    source = application.state.source
    model = source.model
    served = (f"run {model.run_id}, model version {model.version}" if model is not None
              else f"no model yet ({source.last_error}); /healthz answers 503 until one is saved")
    access = "bearer token required" if token else "loopback Host names only"
    console.print(f"[bold]fediot serve[/]: {served}; http://{host}:{port} "
                  f"(POST /score, GET /healthz, GET /metrics; {access})", soft_wrap=True)
    uvicorn.run(application, host=host, port=port, log_level="info", ws="none")


def _sidecar(model: LoadedModel, file_format: str, model_path: Path) -> dict[str, Any]:
    from fediot.core.model.export import INPUT_NAME, OUTPUT_NAME

    return {
        "run": model.run_id, "model_version": model.version, "format": file_format,
        "model": model_path.name,
        "input": {"name": INPUT_NAME, "dtype": "float32", "shape": ["rows", N_FEATURES],
                  "columns": list(FEATURE_NAMES)},
        "output": {"name": OUTPUT_NAME, "dtype": "float32", "shape": ["rows"],
                   "meaning": "reconstruction error; attack when above the threshold"},
        "thresholds": model.thresholds.to_dict(),
        "window": model.window_for(None),
        "windows": {device: model.window_for(device) for device in model.devices},
    }


def sidecar_path(model_file: Path) -> Path:
    """The JSON beside an exported graph: its whole name + ``.json`` (``scorer.onnx.json``), so
    that exports of different formats in one folder never share one."""
    return model_file.with_name(model_file.name + ".json")


@command(app, "export")
def export_command(
    file_format: Annotated[str, typer.Option(
        "--format", help=f"{' or '.join(EXPORT_FORMATS)}")],
    run: RunOption = "latest",
    runs_dir: RunsDirOption = Path("runs"),
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="model file (default: <run>/export/scorer.pt or .onnx)")] = None,
) -> None:
    """The graph holds the scaler (signed log1p, standardisation) and the autoencoder; a JSON
    file beside it (the graph's name + .json, e.g. scorer.onnx.json) holds the thresholds,
    window and column order.
    """
    if file_format not in EXPORT_FORMATS:
        raise fail(f"--format must be one of {', '.join(EXPORT_FORMATS)}; got {file_format!r}")
    try:
        view = find_run(run, runs_dir, needs_model=True)
        target = output or view.root / "export" / f"scorer{EXPORT_SUFFIXES[file_format]}"
        if target.suffix == ".json":
            raise FediotError(f"{target}: the .json name is the sidecar's; pick another suffix")
        # loaded once the run is found: a wrong --run is refused before torch loads
        from fediot.core.io import atomic_path
        from fediot.core.model.export import export_scorer
        from fediot.faces.serve.models import load_model

        model = load_model(view)  # one snapshot for the graph and the sidecar
        export_scorer(model.detector, target, file_format)
        sidecar = sidecar_path(target)
        with atomic_path(sidecar) as tmp:
            tmp.write_text(json.dumps(_sidecar(model, file_format, target), indent=2) + "\n")
    except FediotError as error:
        raise fail(str(error)) from None
    except OSError as error:
        raise fail(f"cannot write the export: {error}") from None
    console.print(f"exported run {view.run_id} ({file_format}): {target} (+ {sidecar.name})")
