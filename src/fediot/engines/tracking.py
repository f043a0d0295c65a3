"""Optional MLflow tracking: a run observer that mirrors a run folder into an MLflow store.

Set ``tracking_args.mlflow_tracking_uri`` (a store on your own machines: ``sqlite:///…``, an
``mlflow server`` at ``http://…``, or a folder) and every engine that writes a run folder also
records, in the experiment ``tracking_args.mlflow_experiment``:

- parameters: the flattened configuration (``train_args.learning_rate`` …);
- per round (step = round): ``train_loss``, ``learning_rate``, ``round_seconds``,
  ``num_examples``, ``devices_answered``, each device's system figures
  (``system.<device>.wall_seconds``, ``cpu_seconds``, ``task_peak_memory_bytes``,
  ``peak_rss_bytes``, ``bytes_down``, ``bytes_up``) and, when the round was evaluated, the
  pooled metrics (``eval.window_vote.f1`` …);
- at the end: the final pooled metrics (``final.…``) and the run folder's files as artifacts
  (``results.json``, ``metrics.jsonl``, ``logs.jsonl``, ``config.yaml``, ``model/``).

The MLflow run is named after the run folder; its id is kept in the folder's ``mlflow.json``, so
a resumed run continues the same MLflow run. MLflow is imported only when tracking is asked
for. A store that cannot be opened is one :class:`FediotError` before training starts; a
failure later stops the tracking (with a warning), never the run.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from fediot.core.config import Config
from fediot.core.errors import FediotError
from fediot.core.federated.messages import LogLine
from fediot.core.federated.participation import StepContact
from fediot.core.federated.server import RoundRecord, RunObserver, RunResult, ServerState
from fediot.core.federated.validation import Rejection
from fediot.core.io import atomic_path
from fediot.engines.run_folder import RunFolder, StatusRecorder

log = logging.getLogger(__name__)

ARTIFACT_FILES = ("results.json", "metrics.jsonl", "logs.jsonl", "config.yaml")
"""Run folder files copied to MLflow at the end (with the ``model/`` folder)."""

_BATCH = 1000  # MLflow accepts at most 1000 metrics and 100 params per log_batch
_PARAM_BATCH = 100
_PARAM_CHARS = 6000


def metric_key(*parts: str) -> str:
    """An MLflow metric key from parts joined by dots; characters MLflow refuses (``#`` in a
    virtual device's id, …) become ``_``."""
    return re.sub(r"[^A-Za-z0-9_\-. /:]", "_", ".".join(parts))


def flatten_numbers(prefix: str, value: Any) -> Iterator[tuple[str, float]]:
    """``(key, number)`` for every finite numeric leaf of nested dicts, keys joined by dots."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from flatten_numbers(f"{prefix}.{key}" if prefix else str(key), item)
    elif (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value)):
        yield metric_key(prefix), float(value)


def _client(uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise FediotError("tracking_args.mlflow_tracking_uri is set but MLflow is not "
                          "installed: pip install fediot[mlflow]") from None
    return MlflowClient(tracking_uri=uri)


def _artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: next to a SQLite database (MLflow's own
    default is ``./mlruns`` under the current directory); the store decides otherwise."""
    if not uri.startswith("sqlite:///") or uri.endswith(":memory:"):
        return None
    database = Path(uri[len("sqlite:///"):]).expanduser().resolve()
    return (database.parent / "mlartifacts").as_uri()


class MlflowTracker:
    """Records a run in MLflow while passing every event on to ``inner``.

    Opening the store, the experiment and the run happens here (errors: one
    :class:`FediotError` naming the URI).

    Parameters
    ----------
    config
        The run's configuration (``tracking_args.mlflow_tracking_uri`` must be set).
    folder
        The run folder (the MLflow run's name, its artifacts, and ``mlflow.json``).
    inner
        The observer events are passed on to (default: none).
    engine
        The engine tag of the MLflow run (default ``comm_args.backend``).
    """

    def __init__(self, config: Config, folder: RunFolder, inner: RunObserver | None = None,
                 engine: str | None = None) -> None:
        tracking = config.tracking_args
        if not tracking.mlflow_tracking_uri:
            raise FediotError("tracking_args.mlflow_tracking_uri is empty: nothing to track to")
        self.uri = tracking.mlflow_tracking_uri
        self.folder = folder
        self.inner = inner
        self.engine = engine or config.comm_args.backend
        self.active = True
        try:
            self._client = _client(self.uri)
            self.run_id = self._open_run(config)
        except FediotError:
            raise
        except Exception as error:  # MLflow raises many kinds (store, HTTP, SQL, OS)
            raise FediotError(f"MLflow store {self.uri}: {error}") from None

    def _open_run(self, config: Config) -> str:
        record = self.folder.root / "mlflow.json"
        if record.is_file():  # a resumed run continues its MLflow run
            try:
                previous = json.loads(record.read_text())
            except (OSError, ValueError) as error:
                raise FediotError(f"{record}: cannot read ({error})") from None
            if previous.get("tracking_uri") == self.uri:
                run_id = str(previous["run_id"])
                self._client.update_run(run_id, status="RUNNING")
                return run_id
        name = config.tracking_args.mlflow_experiment
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = (experiment.experiment_id if experiment is not None else
                         self._client.create_experiment(
                             name, artifact_location=_artifact_location(self.uri)))
        run = self._client.create_run(
            experiment_id, run_name=self.folder.root.name,
            tags={"fediot.run_folder": str(self.folder.root.resolve()),
                  "fediot.engine": self.engine,
                  "fediot.dataset": config.data_args.dataset})
        run_id = str(run.info.run_id)
        self._log_params(run_id, config)
        with atomic_path(record) as tmp:
            tmp.write_text(json.dumps({"tracking_uri": self.uri, "run_id": run_id,
                                       "experiment": name}, indent=2) + "\n")
        return run_id

    def _log_params(self, run_id: str, config: Config) -> None:
        from mlflow.entities import Param

        params = [Param(f"{section}.{key}", str(value)[:_PARAM_CHARS])
                  for section, values in config.to_dict().items()
                  for key, value in values.items()]
        for start in range(0, len(params), _PARAM_BATCH):
            self._client.log_batch(run_id, params=params[start: start + _PARAM_BATCH])

    def _log_metrics(self, values: Sequence[tuple[str, float]], step: int) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(key, value, stamp, step) for key, value in values]
        for start in range(0, len(metrics), _BATCH):
            self._client.log_batch(self.run_id, metrics=metrics[start: start + _BATCH])

    def _safely(self, what: str, action: Any, *args: Any) -> None:
        """Run an MLflow call; on failure warn once and stop tracking (the run goes on)."""
        if not self.active:
            return
        try:
            action(*args)
        except Exception as error:  # tracking must never break a training run
            self.active = False
            log.warning("MLflow tracking at %s stopped while logging %s: %s (the run folder "
                        "%s stays complete)", self.uri, what, error, self.folder.root)

    # --- RunObserver ---------------------------------------------------------------------

    def on_phase(self, phase: str, detail: str) -> None:
        if self.inner is not None:
            self.inner.on_phase(phase, detail)

    def on_round(self, record: RoundRecord) -> None:
        self._safely(f"round {record.server_round}", self._log_metrics,
                     round_metrics(record), record.server_round)
        if self.inner is not None:
            self.inner.on_round(record)

    def on_logs(self, lines: Sequence[LogLine]) -> None:
        if self.inner is not None:
            self.inner.on_logs(lines)

    def on_rejected(self, rejection: Rejection) -> None:
        on_rejected = getattr(self.inner, "on_rejected", None)
        if callable(on_rejected):
            on_rejected(rejection)

    def on_contact(self, contact: StepContact) -> None:
        on_contact = getattr(self.inner, "on_contact", None)
        if callable(on_contact):
            on_contact(contact)

    # --- the end ---------------------------------------------------------------------------

    def finish(self, result: RunResult | None) -> None:
        """Final metrics and the run folder's files (``result``: ``None`` when the run
        failed), then the MLflow run ends ``FINISHED`` or ``FAILED``."""
        if result is not None:
            self._safely("the final metrics", self._log_metrics,
                         list(flatten_numbers("final", result.evaluation.pooled)),
                         len(result.history))
        self._safely("the artifacts", self._log_artifacts)
        self._safely("the run's end", self._client.set_terminated, self.run_id,
                     "FINISHED" if result is not None else "FAILED")

    def _log_artifacts(self) -> None:
        for name in ARTIFACT_FILES:
            path = self.folder.root / name
            if path.is_file():
                self._client.log_artifact(self.run_id, str(path))
        model = self.folder.root / "model"
        if model.is_dir():
            self._client.log_artifacts(self.run_id, str(model), "model")


def round_metrics(record: RoundRecord) -> list[tuple[str, float]]:
    """The MLflow metrics of one round (see the module docstring)."""
    values = [("train_loss", record.train_loss), ("learning_rate", record.learning_rate),
              ("round_seconds", record.seconds), ("num_examples", float(record.num_examples)),
              ("devices_answered", float(len(record.answered)))]
    values += list(flatten_numbers("system", record.system))
    if record.evaluation is not None:
        values += list(flatten_numbers("eval", record.evaluation))
    return [(metric_key(key), value) for key, value in values
            if math.isfinite(value)]


def tracking_observer(config: Config, folder: RunFolder, inner: RunObserver | None = None,
                      engine: str | None = None) -> MlflowTracker | None:
    """An :class:`MlflowTracker` when ``tracking_args.mlflow_tracking_uri`` is set, else
    ``None`` (no MLflow import)."""
    if not config.tracking_args.mlflow_tracking_uri:
        return None
    return MlflowTracker(config, folder, inner, engine)


def record_run(folder: RunFolder, config: Config, devices: Sequence[str],
               run: Callable[[RunObserver, Callable[[ServerState], None]], RunResult], *,
               observer: RunObserver | None = None, engine: str | None = None) -> RunResult:
    """Run ``run(observer, checkpoint)`` recorded the way every engine records a run: the
    folder's ``status.json`` kept current, a checkpoint each round, MLflow when configured,
    ``results.json`` and the model at the end, and the run marked failed if it raises.

    Parameters
    ----------
    folder, config, devices
        The run's folder, its configuration and the devices it expects.
    run
        Runs the federated training, passing progress to the observer it is given and each
        round's server state to the checkpoint function.
    observer
        Also told of every event (the CLI's progress, the deployment's log). Default none.
    engine
        Name in ``status.json`` and MLflow; default ``comm_args.backend``.
    """
    status = StatusRecorder(folder, config, list(devices), observer, engine=engine)
    tracker: MlflowTracker | None = None
    try:
        tracker = tracking_observer(config, folder, observer, engine=engine)
        status.inner = tracker or observer
        result = run(status, folder.save_checkpoint)
        folder.save_results(result)
    except (KeyboardInterrupt, SystemExit):
        # a signal ended it from outside (Ctrl-C; a deployment's ServerApp whose SuperLink
        # died with its server): not the run's own failure, and resumable
        status.finish("interrupted", "it was stopped by a signal before it finished")
        if tracker is not None:
            tracker.finish(None)
        raise
    except BaseException:
        status.finish("failed")
        if tracker is not None:
            tracker.finish(None)
        raise
    status.finish()
    if tracker is not None:
        tracker.finish(result)
    return result
