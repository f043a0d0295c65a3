"""The served model and its hot reload from a run folder.

:class:`ModelSource` holds one immutable :class:`LoadedModel` and replaces it with a single
attribute assignment when a newer global model appears, so a request that already took the
old holder finishes with it and no request is dropped or sees half a model.

When it looks: at most once per ``check_interval`` seconds, on the request that finds the
interval elapsed (a few ``stat`` calls); the request that loads a new model pays for the load,
concurrent requests keep scoring with the old one. What it follows:

- a pinned run (path, id or prefix): that run's ``model/`` files, e.g. a simulation still
  running that saves its global model;
- ``latest``: :func:`~fediot.engines.run_folder.latest_run` with a model required: the newest
  run (by start time) under ``runs_dir`` that finished with a saved model, re-resolved at every
  check, so a later run's model replaces the current one once that run finishes (a newer run
  still running, failed or interrupted does not take over, nor does reading an older run).

A model is reloaded when any of ``model/weights.npz``, ``scaler.npz`` or ``thresholds.json``
changes (size or modification time), not only the weights that
:meth:`RunView.model_version` tracks: :meth:`RunFolder.save_model` replaces the three files
one after the other, so a load that raced the writer is corrected by the next check.
"""

from __future__ import annotations

import logging
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from fediot.core.errors import FediotError
from fediot.core.federated.evaluation import Thresholds
from fediot.core.model import AutoencoderDetector, FeatureScaler
from fediot.engines.run_folder import LATEST, RunView, find_run, latest_run

log = logging.getLogger("fediot.serve")

MODEL_FILES: Final[tuple[str, ...]] = ("weights.npz", "scaler.npz", "thresholds.json")

Signature = tuple[tuple[int, int] | None, ...]


@dataclass(frozen=True)
class LoadedModel:
    """One loaded global model: never mutated, replaced whole.

    Parameters
    ----------
    run_id
        The run it comes from.
    version
        :meth:`RunView.model_version` when it was loaded.
    detector
        The fitted detector (global threshold; scores do not depend on the threshold).
    thresholds
        The run's thresholds (global and per device).
    window
        The run's ``detection_args.window`` (0: each device has its own, in the thresholds).
    signature
        Size and modification time of the model files it was loaded from.
    """

    run_id: str
    version: str
    detector: AutoencoderDetector
    thresholds: Thresholds
    window: int
    signature: Signature

    @property
    def devices(self) -> list[str]:
        return sorted(self.thresholds.per_device)

    def window_for(self, device: str | None) -> int:
        """The window ``device`` votes over (the run's fixed one, or the device's ws*)."""
        return self.thresholds.window(device, self.window)

    def threshold(self, device: str | None) -> float:
        """``device``'s threshold, the global one for ``None``; :class:`KeyError` if unknown."""
        if device is None:
            return self.thresholds.global_threshold
        return self.thresholds.per_device[device]


def model_signature(view: RunView) -> Signature:
    """(mtime, size) of each model file, ``None`` for a missing one."""
    signature: list[tuple[int, int] | None] = []
    for name in MODEL_FILES:
        try:
            stat = (view.root / "model" / name).stat()
        except FileNotFoundError:
            signature.append(None)
        else:
            signature.append((stat.st_mtime_ns, stat.st_size))
    return tuple(signature)


def load_model(view: RunView) -> LoadedModel:
    """The run's current global model; :class:`FediotError` if it has none or cannot be read."""
    signature = model_signature(view)
    version = view.model_version()
    if version is None:
        raise FediotError(f"run {view.run_id} has no saved model yet (model/weights.npz)")
    try:
        state, thresholds = view.load_model()
        config = view.config()
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as error:
        raise FediotError(f"run {view.run_id}: cannot read the saved model ({error})") from None
    detector = AutoencoderDetector.from_components(
        FeatureScaler.from_stats(state.scaler), state.weights, thresholds.global_threshold,
        seed=config.common_args.random_seed,
        window=thresholds.window(None, config.detection_args.window))
    return LoadedModel(view.run_id, version, detector, thresholds,
                       config.detection_args.window, signature)


class ModelSource:
    """Keeps the served model current (see the module docstring).

    Parameters
    ----------
    reference
        A :class:`RunView`, or a run reference for :func:`find_run` (path, id, unique prefix,
        or ``latest``).
    runs_dir
        Where run ids and ``latest`` are looked up (default ``runs``).
    check_interval
        Minimum seconds between two looks at the run folder (default 1.0; 0 looks on every
        request).
    on_load
        Called with each newly loaded model (metrics, logs).
    on_failure
        Called with the message of each failed load.

    A pinned reference that names no run raises :class:`FediotError` at once; a run without a
    model yet (or ``latest`` with no run) just leaves :attr:`model` ``None`` until one appears.
    """

    def __init__(self, reference: RunView | str | Path, runs_dir: Path = Path("runs"), *,
                 check_interval: float = 1.0,
                 on_load: Callable[[LoadedModel], None] | None = None,
                 on_failure: Callable[[str], None] | None = None) -> None:
        if check_interval < 0:
            raise FediotError(f"check_interval must be ≥ 0 seconds; got {check_interval}")
        self.runs_dir = Path(runs_dir)
        self.check_interval = check_interval
        self.follows_latest = isinstance(reference, str) and reference == LATEST
        self._pinned = None if self.follows_latest else (
            reference if isinstance(reference, RunView)
            else find_run(reference, self.runs_dir, needs_model=True))
        self._on_load = on_load
        self._on_failure = on_failure
        self._lock = threading.Lock()
        self._last_check = -float("inf")
        self._failed_signature: Signature | None = None
        self.model: LoadedModel | None = None
        self.last_error: str | None = None
        self.refresh()

    @property
    def run_id(self) -> str | None:
        """The run served (or awaited): the pinned run, else the loaded model's."""
        if self._pinned is not None:
            return self._pinned.run_id
        return self.model.run_id if self.model is not None else None

    def _view(self) -> RunView | None:
        if self._pinned is not None:
            return self._pinned
        return latest_run(self.runs_dir, needs_model=True)

    def refresh(self) -> bool:
        """Look now; load and swap in a newer model. True if the model changed."""
        with self._lock:
            return self._refresh_locked()

    def _refresh_locked(self) -> bool:
        self._last_check = time.monotonic()
        try:
            view = self._view()
        except FediotError as error:
            return self._failed(str(error), None)
        if view is None:
            self.last_error = f"no run with a saved model under {self.runs_dir}"
            return False
        signature = model_signature(view)
        current = self.model
        if current is not None and current.run_id == view.run_id \
                and current.signature == signature:
            return False
        if signature == self._failed_signature or signature[0] is None:
            if signature[0] is None:
                self.last_error = f"run {view.run_id} has no saved model yet"
            return False  # the same files failed already; wait for new ones
        try:
            loaded = load_model(view)
        except FediotError as error:
            return self._failed(str(error), signature)
        if model_signature(view) != loaded.signature:
            return False  # a writer replaced files while we read them: load at the next look
        self.model = loaded  # the atomic swap: requests hold either the old or the new model
        self.last_error = None
        self._failed_signature = None
        log.info("serving run %s, model version %s", loaded.run_id, loaded.version)
        if self._on_load is not None:
            self._on_load(loaded)
        return True

    def _failed(self, message: str, signature: Signature | None) -> bool:
        self.last_error = message
        self._failed_signature = signature
        log.warning("model not (re)loaded: %s", message)
        if self._on_failure is not None:
            self._on_failure(message)
        return False

    def current(self) -> LoadedModel | None:
        """The model to use for one request, after a look at the run folder when the interval
        has elapsed (skipped if another request is looking right now)."""
        if time.monotonic() - self._last_check >= self.check_interval \
                and self._lock.acquire(blocking=False):
            try:
                self._refresh_locked()
            finally:
                self._lock.release()
        return self.model
