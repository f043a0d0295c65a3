"""Run configuration: the FedIoT seed's YAML (``fedml_config.yaml``) with every key checked.

The file keeps the seed's sections and key names so existing configs read unchanged; keys the
seed had but we have no use for are accepted only where they are harmless and listed in
``IGNORED_KEYS`` (each with the reason). Every other key is honoured or rejected: an unknown
key, a wrong type or an impossible value is one :class:`ConfigError` naming ``section.key``.

Every number is bounded at load time (:data:`INT_RANGES`, :data:`FLOAT_RANGES`): integers must
be integers (not booleans, not ``1e20``), floats finite, and both within ranges far above any
real use, so that a value such as ``batch_size: 1e20`` or ``threshold_k: .nan`` fails here,
naming its key, instead of hanging or crashing the run later. The file itself is read by
:func:`fediot.core.safe_yaml.load_yaml` (size, nesting, encoding and alias limits).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import reprlib
import typing
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Final

import yaml

from fediot.core.catalog import DEVICES
from fediot.core.errors import FediotError
from fediot.core.features.warmup import WarmupRule
from fediot.core.limits import (
    MAX_BATCH_SIZE,
    MAX_EPOCHS,
    MAX_ROUNDS,
    MAX_ROWS,
    MAX_RUN_NAME_LENGTH,
    MAX_SECONDS,
    MAX_SEED,
    MAX_TESTBED_SCALE,
    MAX_VIRTUAL_DEVICES_PER_DEVICE,
    MAX_WINDOW,
)
from fediot.core.model.backend import BACKENDS
from fediot.core.safe_yaml import UnsafeInputError, load_yaml, read_text


class ConfigError(FediotError):
    """A configuration key is unknown, of the wrong type or impossible."""


@dataclass(frozen=True)
class CommonArgs:
    """``common_args``.

    Parameters
    ----------
    training_type
        ``simulation`` (one machine) or ``cross_silo`` (real server and devices). Default
        ``simulation``.
    random_seed
        Seeds data caps, client sampling, weight initialisation and shuffling; 0…2³² − 1.
        Default 0.
    """

    training_type: str = "simulation"
    random_seed: int = 0


@dataclass(frozen=True)
class DataArgs:
    """``data_args``.

    Parameters
    ----------
    dataset
        ``testbed`` (the embedded simulated devices, default) or ``N-BaIoT`` (real data at
        ``data_cache_dir``, in the UCI, Kaggle or testbed layout).
    data_cache_dir
        Where the real N-BaIoT lies (``N-BaIoT``) or where the testbed is cached (``testbed``;
        empty means the user cache). Default ``""``.
    testbed_scale
        Size of the generated testbed (1.0: ≥ 20 k benign rows per device), at most
        :data:`~fediot.core.limits.MAX_TESTBED_SCALE`. Default 1.0.
    testbed_seed
        Seed of the generated testbed (the data, not the training); 0…2³² − 1. Default 0.
    split
        Train / threshold ("opt") / benign-test fractions of each device's benign rows, in time
        order. Default thirds, as in N-BaIoT.
    attack_cap
        At most this many rows per attack class and device (a seeded subset kept in time
        order); 0 keeps all. Default 0.
    virtual_devices_per_device
        Split each device's data into this many virtual devices (consecutive blocks), at most
        :data:`~fediot.core.limits.MAX_VIRTUAL_DEVICES_PER_DEVICE`. Default 1.
    warmup_min_history
        Training and threshold rows whose source had less than this many packets of history
        (``MI_dir`` and ``H`` weights at λ = 0.01 below 1 + this) are dropped as warm-up on
        every device (:mod:`fediot.core.features.warmup`); test rows never are. 0 keeps them.
        Default 1.0.
    warmup_settle_seconds
        ``fediot detect`` holds back alerts for this long after its first packet, while every
        source is new to its extractor. 0 disables. Default 100 (the slowest decay's half-life).
    """

    dataset: str = "testbed"
    data_cache_dir: str = ""
    testbed_scale: float = 1.0
    testbed_seed: int = 0
    split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)
    attack_cap: int = 0
    virtual_devices_per_device: int = 1
    warmup_min_history: float = 1.0
    warmup_settle_seconds: float = 100.0

    def warmup_rule(self) -> WarmupRule:
        """The run's :class:`~fediot.core.features.warmup.WarmupRule`."""
        return WarmupRule(self.warmup_min_history, self.warmup_settle_seconds)


@dataclass(frozen=True)
class ModelArgs:
    """``model_args``.

    Parameters
    ----------
    model
        Only ``autoencoder`` (115 → 86 → 58 → 38 → 29 and back). Default ``autoencoder``.
    """

    model: str = "autoencoder"


@dataclass(frozen=True)
class TrainArgs:
    """``train_args``.

    Parameters
    ----------
    federated_optimizer
        ``FedAvg`` (default), ``FedProx`` or ``FedAdam`` (FedDetect's own), or Flower's
        robust ``FedTrimmedAvg``, ``FedMedian``, ``Krum``, ``MultiKrum`` or ``Bulyan``.
    client_num_in_total
        Devices taking part (the first N of the catalogue, or of the virtual devices). Default 9.
    client_num_per_round
        Devices sampled each round (any subset, seeded). Default 9.
    comm_round
        Federated rounds at most: early stopping on the threshold rows' validation loss
        (``validation_args``) usually ends the run sooner. Default 100.
    epochs
        Local epochs per round. Default 1.
    batch_size
        Local mini-batch size. Default 128.
    client_optimizer
        ``adam`` (default) or ``sgd``.
    learning_rate
        Client learning rate at round 1. Default 0.003.
    weight_decay
        Client L2 penalty. Default 0.0.
    lr_schedule
        Cross-round schedule of the client learning rate: ``constant``, ``cosine`` (default;
        decays to ``lr_min_factor`` × the start value at the last round) or ``step``
        (× ``lr_step_gamma`` every ``lr_step_rounds`` rounds).
    lr_min_factor, lr_step_gamma, lr_step_rounds
        Schedule parameters. Defaults 0.1, 0.5, 5.
    proximal_mu
        FedProx's μ. Default 0.01 (used only by FedProx).
    server_learning_rate, server_beta_1, server_beta_2, server_tau
        FedAdam's server optimiser. Defaults 0.01, 0.9, 0.99, 1e-3.
    trimmed_beta
        FedTrimmedAvg's fraction cut at each end. Default 0.2.
    krum_malicious
        The number f of malicious devices Krum, MultiKrum and Bulyan assume. Krum and
        MultiKrum need client_num_per_round ≥ 2f + 3, Bulyan ≥ 4f + 3 (refused at load
        otherwise). Default -1: the most that client_num_per_round n tolerates, ⌊(n − 3)/2⌋
        for Krum and MultiKrum, ⌊(n − 3)/4⌋ for Bulyan (:func:`assumed_malicious`). A round
        with fewer replies assumes at most what its replies tolerate.
    krum_selected
        How many of the best-scored updates Krum and MultiKrum average (weighted by rows).
        Default 0: n − f, every update but the f assumed malicious (Blanchard et al.'s
        Multi-Krum), so that honest but different devices are all heard; 1 is the classical
        Krum's single pick (which, on non-identical devices, follows one device); at most
        n − f.
    robust_statistics
        How the scaler step (feature means and spreads) and the threshold step (global and
        quantile thresholds) combine the devices' statistics: ``off`` the exact pooled sums;
        ``trimmed_mean`` each device one vote, the trimmed mean (with ``trimmed_beta``, at
        least one device cut at each end from 3 devices on) of the devices' means, spreads
        and error CDFs; ``median`` their median instead
        (:mod:`fediot.core.federated.robust_stats`); ``auto`` (default) when the
        federated_optimizer is a robust one (FedTrimmedAvg, FedMedian, Krum, MultiKrum,
        Bulyan) ``median`` for the scaler and ``trimmed_mean`` for the threshold, else
        ``off``. Per-device thresholds always use each device's own statistics.
    client_num_min_replies
        A round completes when at least this many sampled devices replied (a lost device is
        logged, the round goes on); fewer is an error naming the missing devices. A rejected
        reply (one that fails the server's checks, :mod:`fediot.core.federated.validation`)
        counts as lost, named as rejected; the scaler and threshold steps need as many
        replies too. Default 1.
    max_update_norm_ratio
        A device's training reply is rejected when its update ‖w − w_global‖ exceeds this many
        times the median update norm of the round (with at least 3 replies); 0 turns the check
        off. Default 10.0.
    stale_after_missed_rounds
        A device sampled for training rounds that replied to none of its last this many is
        left out of the threshold and evaluation steps (``results.json`` ``excluded_devices``
        names it and why): the global model holds no evidence of its traffic, and its large
        errors would raise a global threshold for every device. Not being sampled never
        counts; a device that trains again in a later round it is sampled for is back in; 0
        keeps every device. Default 1: a device must have answered the last round it was
        sampled for, the one rule that needs no guess at how long a model stays good (a
        device lost in the last round is then reported, not silently pooled).
    """

    federated_optimizer: str = "FedAvg"
    client_num_in_total: int = 9
    client_num_per_round: int = 9
    comm_round: int = 100
    epochs: int = 1
    batch_size: int = 128
    client_optimizer: str = "adam"
    learning_rate: float = 0.003
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    lr_min_factor: float = 0.1
    lr_step_gamma: float = 0.5
    lr_step_rounds: int = 5
    proximal_mu: float = 0.01
    server_learning_rate: float = 0.01
    server_beta_1: float = 0.9
    server_beta_2: float = 0.99
    server_tau: float = 1e-3
    trimmed_beta: float = 0.2
    krum_malicious: int = -1
    krum_selected: int = 0
    robust_statistics: str = "auto"
    client_num_min_replies: int = 1
    max_update_norm_ratio: float = 10.0
    stale_after_missed_rounds: int = 1


@dataclass(frozen=True)
class ValidationArgs:
    """``validation_args``.

    Parameters
    ----------
    frequency_of_the_test
        Evaluate the global model every this many rounds (and always after the last).
        0 evaluates only at the end. Default 0.
    keep_best_round
        Every device reports the validation loss (mean reconstruction error of its threshold
        rows, never test rows) of each global model; the run ends with the round whose pooled
        validation loss was lowest, not necessarily the last. Default true.
    early_stopping_patience
        Stop training after this many local epochs without an ``early_stopping_min_delta``
        improvement of the validation loss per epoch (``comm_round`` is then the most). Counted
        in epochs so that the rule does not depend on how training is cut into rounds ×
        epochs: with E epochs per round, ⌈patience / E⌉ rounds, each of which must improve by
        1 − (1 − δ)^E. 0 never stops early. Default 5.
    early_stopping_min_delta
        Relative improvement per local epoch that counts (δ above). Default 0.01.
    """

    frequency_of_the_test: int = 0
    keep_best_round: bool = True
    early_stopping_patience: int = 5
    early_stopping_min_delta: float = 0.01


@dataclass(frozen=True)
class DetectionArgs:
    """``detection_args`` (ours: how scores become verdicts).

    Parameters
    ----------
    threshold_k
        Threshold = mean + k·std of the benign threshold-split errors. Default 3.0.
    threshold_mode
        ``per_device`` (default: each device's own threshold-split statistics, as in
        N-BaIoT), ``global`` (one threshold for all devices, from every device's pooled
        statistics) or ``quantile`` (a pooled quantile).
    threshold_quantile
        With ``quantile``: the pooled benign-error quantile. Default 0.999.
    window
        Majority vote over this many consecutive rows; 1 disables; 0 (default) lets each
        device choose it as N-BaIoT does: ws*, the smallest window that raises no alarm on its
        own threshold rows at its threshold (the paper's ws* were 20–82 rows per device).
    max_window
        With ``window: 0``, the largest window a device may choose. Default 1000.
    """

    threshold_k: float = 3.0
    threshold_mode: str = "per_device"
    threshold_quantile: float = 0.999
    window: int = 0
    max_window: int = 1000

    def describe_window(self) -> str:
        """The window setting in words, for tables and reports."""
        if self.window == 0:
            return f"ws* per device (≤ {self.max_window}, from threshold rows)"
        return f"{self.window} rows"


@dataclass(frozen=True)
class DeviceArgs:
    """``device_args``.

    Parameters
    ----------
    worker_num
        Parallel client processes in simulation. Default 1.
    using_gpu
        Train on a CUDA GPU when one is present (falls back to the CPU, with a warning).
        Default false.
    min_rows_for_statistics
        A device never sends scaler or error statistics of fewer rows than this (it refuses
        the step instead, and a training reply then carries no validation loss): sums over a
        handful of rows say too much about each row. Default 20.
    backend
        What a device trains and scores with: ``torch``, ``numpy`` (no torch needed; the same
        arithmetic within float32 rounding, see :mod:`fediot.core.model.numpy_backend`) or
        ``auto``: torch when it is installed, else NumPy. A device's own choice
        (``fediot client --backend``) overrides the run's. Default ``auto``.
    vectorised_shuffle
        With ``comm_args.backend: vectorised``: ``exact`` (default) shuffles every device's rows
        with its own seed, as the sequential engine does (same global model within 1e-6);
        ``fast`` draws all of a chunk's shuffles at once (statistically the same training, not
        the same numbers).
    vectorised_chunk_devices
        With ``vectorised``: devices trained together at most; 0 (default) sizes chunks to
        about 32 MiB of tensors (:data:`fediot.core.model.stacked.CHUNK_MEMORY_BYTES`).
    vectorised_threads
        With ``vectorised``: threads in each process computing at once, each with one torch
        thread (training chunks, parts of a scoring pass); the
        results do not depend on it. 0 (default): the cores this process may use, shared by
        the ``worker_num`` processes.
    """

    worker_num: int = 1
    using_gpu: bool = False
    min_rows_for_statistics: int = 20
    backend: str = "auto"
    vectorised_shuffle: str = "exact"
    vectorised_chunk_devices: int = 0
    vectorised_threads: int = 0


@dataclass(frozen=True)
class CommArgs:
    """``comm_args``.

    Parameters
    ----------
    backend
        ``inprocess`` (default): this machine, clients in-process or in worker processes
        (the seed's ``MPI`` is accepted as a synonym); ``vectorised``: this machine, each
        round's sampled devices trained together as stacked tensors (hundreds to tens of
        thousands of devices; ``worker_num`` processes, each its share); ``ray``: Flower's
        simulation
        runtime, one virtual SuperNode per device, ``worker_num`` training at once.
    ray_address
        With ``ray``: an existing Ray cluster to attach to (``host:port``); empty starts a
        private local Ray runtime. Default ``""``.
    secure_aggregation
        Secure aggregation (SecAgg with dropout recovery,
        :mod:`fediot.core.federated.secure_aggregation`) of the training rounds' weight sums,
        the scaler step's sums and, with a ``global`` or ``quantile`` threshold, the
        threshold step's error statistics: the server learns only the sum of the sampled
        devices' weights × rows and of the devices' statistics
        (:mod:`fediot.core.federated.secure_statistics`). ``per_device`` thresholds are each
        set from one device's own statistics, so that step stays in clear. Needs a linear
        aggregation (FedAvg, FedProx, FedAdam) and pooled statistics
        (``train_args.robust_statistics`` off or auto), not robust ones. Default ``false``.
    secagg_clipping_range
        C: every weight is clipped to [−C, C] before quantisation. Default 8.0.
    secagg_quantization_range
        Integer steps over [−C, C]: the error is at most C / this per weight. Default 2^24.
    secagg_reconstruction_threshold
        Shares needed to rebuild a device's secrets (and devices that must survive a round);
        0 (default): a strict majority of the round's sampled devices, at least 2.
    """

    backend: str = "inprocess"
    ray_address: str = ""
    secure_aggregation: bool = False
    secagg_clipping_range: float = 8.0
    secagg_quantization_range: int = 1 << 24
    secagg_reconstruction_threshold: int = 0


@dataclass(frozen=True)
class TrackingArgs:
    """``tracking_args``.

    Parameters
    ----------
    log_file_dir
        Parent folder of run folders. Default ``./runs``.
    run_name
        Name of the run folder: one folder name (no ``/`` or ``\\``, no control characters,
        not starting with ``.`` or ``-``). Default ``""``: time stamp + dataset + optimiser.
    mlflow_tracking_uri
        Also record the run (parameters, per-round metrics, the results and model files) in
        this MLflow tracking store, yours: ``sqlite:///path/mlflow.db`` (artifacts go to
        ``mlartifacts/`` next to the database), ``http(s)://host:port`` (an ``mlflow server``)
        or ``file:`` / a folder (MLflow's older file store). Needs the ``mlflow`` package
        (``pip install fediot[mlflow]``). Default ``""``: no MLflow, the run folder only.
    mlflow_experiment
        The MLflow experiment the run goes in (created if missing). Default ``fediot``.
    """

    log_file_dir: str = "./runs"
    run_name: str = ""
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = "fediot"


@dataclass(frozen=True)
class PrivacyArgs:
    """``privacy_args`` (ours: differential privacy, :mod:`fediot.core.federated.privacy`).

    Parameters
    ----------
    enabled
        Devices train with DP-SGD and noise their statistics, and the run records its (ε, δ)
        per row of a device. Default false.
    clip_norm
        C: DP-SGD clips every row's gradient to this L2 norm. Default 0.1: the lowest
        threshold-row error in a sweep of 0.03–1 at ε = 10 and 1 (BENCHMARKS.md).
    noise_multiplier
        σ: DP-SGD adds N(0, σ²C²) to every coordinate of each step's summed gradient.
        Ignored when ``target_epsilon`` is set (σ is then solved per device). Default 1.0.
    statistics_noise_multiplier
        Noise on each sum of the scaler and on the threshold histogram, in units of its
        sensitivity. Ignored when ``target_epsilon`` is set. Default 10.0.
    target_epsilon
        When > 0, the multipliers are solved with the accountant so that every device's rows
        stay within this ε at ``target_delta`` (assuming it trains in every round). Default 0
        (use the multipliers as given).
    target_delta
        δ of the reported ε. Default 1e-5.
    statistics_epsilon_share
        With ``target_epsilon``: the share of ε the statistics alone may spend (the scaler
        sums and every threshold histogram); the rest goes to DP-SGD. Default 0.1.
    feature_bound
        Each signed-log feature is clipped to [−bound, bound] before the scaler sums.
        Default 25.0 (signed_log1p of 7·10¹⁰).
    """

    enabled: bool = False
    clip_norm: float = 0.1
    noise_multiplier: float = 1.0
    statistics_noise_multiplier: float = 10.0
    target_epsilon: float = 0.0
    target_delta: float = 1e-5
    statistics_epsilon_share: float = 0.1
    feature_bound: float = 25.0


PRIVACY_FLOAT_RANGES: Final[dict[str, tuple[str, float, float, str]]] = {
    "privacy_args.clip_norm": ("(", 0.0, 1e6, "]"),
    "privacy_args.noise_multiplier": ("[", 0.0, 1e6, "]"),
    "privacy_args.statistics_noise_multiplier": ("[", 0.0, 1e6, "]"),
    "privacy_args.target_epsilon": ("[", 0.0, 1e3, "]"),
    "privacy_args.target_delta": ("(", 0.0, 0.1, "]"),
    "privacy_args.statistics_epsilon_share": ("(", 0.0, 1.0, ")"),
    "privacy_args.feature_bound": ("(", 0.0, 1e3, "]"),
}
"""Bounds of the ``privacy_args`` numbers (part of :data:`FLOAT_RANGES`)."""


def _check_privacy(privacy: PrivacyArgs, fail: Callable[[str, str], ConfigError]) -> None:
    if not privacy.enabled or privacy.target_epsilon > 0:
        return
    for key in ("noise_multiplier", "statistics_noise_multiplier"):
        if getattr(privacy, key) == 0:
            raise fail(f"privacy_args.{key}", "must be > 0 with privacy enabled (0 is no "
                       "privacy: set enabled: false, or a target_epsilon)")


@dataclass(frozen=True)
class Config:
    """A whole run configuration; see each section's class for its keys and defaults."""

    common_args: CommonArgs = field(default_factory=CommonArgs)
    data_args: DataArgs = field(default_factory=DataArgs)
    model_args: ModelArgs = field(default_factory=ModelArgs)
    train_args: TrainArgs = field(default_factory=TrainArgs)
    validation_args: ValidationArgs = field(default_factory=ValidationArgs)
    detection_args: DetectionArgs = field(default_factory=DetectionArgs)
    device_args: DeviceArgs = field(default_factory=DeviceArgs)
    comm_args: CommArgs = field(default_factory=CommArgs)
    tracking_args: TrackingArgs = field(default_factory=TrackingArgs)
    privacy_args: PrivacyArgs = field(default_factory=PrivacyArgs)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Plain nested dict (YAML-ready)."""
        out: dict[str, dict[str, Any]] = {}
        for section in fields(self):
            values = dataclasses.asdict(getattr(self, section.name))
            out[section.name] = {k: list(v) if isinstance(v, tuple) else v
                                 for k, v in values.items()}
        return out

    def with_overrides(self, overrides: dict[str, Any]) -> Config:
        """A copy with ``{"section.key": value}`` applied and the whole result re-checked."""
        raw = self.to_dict()
        for dotted, value in overrides.items():
            section, _, key = dotted.partition(".")
            if section not in raw or not key:
                raise ConfigError(f"{_key_name(dotted)}: not a section.key of the configuration"
                                  f"{closest_keys(dotted) if dotted.isprintable() else ''}")
            raw[section][key] = value
        return parse_config(raw, source="overrides")


IGNORED_KEYS: dict[str, str] = {
    "common_args.scenario": "only horizontal federated learning exists here",
    "common_args.using_mlops": "there is no hosted MLOps; tracking is local",
    "common_args.config_version": "informational",
    "environment_args.bootstrap": "setup is scripts/setup.sh",
    "data_args.partition_method": "a device's data is its own traffic (naturally non-IID)",
    "data_args.partition_alpha": "a device's data is its own traffic (naturally non-IID)",
    "model_args.model_file_cache_folder": "models are written to the run folder",
    "model_args.global_model_file_path": "models are written to the run folder",
    "train_args.client_id_list": "devices are chosen by client_num_in_total",
    "device_args.gpu_mapping_file": "one process uses at most one GPU",
    "device_args.gpu_mapping_key": "one process uses at most one GPU",
    "comm_args.is_mobile": "not used",
    "comm_args.mqtt_config_path": "weights never travel through a third-party broker",
    "comm_args.s3_config_path": "weights never travel through a third-party store",
    "tracking_args.enable_wandb": "only false is accepted: tracking is local",
    "tracking_args.wandb_key": "no hosted tracking",
    "tracking_args.wandb_project": "no hosted tracking",
    "tracking_args.wandb_name": "no hosted tracking",
}

MLFLOW_URI_SCHEMES = ("file", "sqlite", "http", "https")
"""Tracking stores ``tracking_args.mlflow_tracking_uri`` accepts (besides a plain folder path):
stores on the user's own machines, never a hosted service."""

CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "common_args.training_type": ("simulation", "cross_silo"),
    "data_args.dataset": ("testbed", "N-BaIoT"),
    "model_args.model": ("autoencoder",),
    "train_args.federated_optimizer": ("FedAvg", "FedProx", "FedAdam", "FedTrimmedAvg",
                                       "FedMedian", "Krum", "MultiKrum", "Bulyan"),
    "train_args.robust_statistics": ("auto", "off", "trimmed_mean", "median"),
    "train_args.client_optimizer": ("adam", "sgd"),
    "train_args.lr_schedule": ("constant", "cosine", "step"),
    "detection_args.threshold_mode": ("global", "per_device", "quantile"),
    "comm_args.backend": ("inprocess", "MPI", "vectorised", "ray"),
    "device_args.backend": BACKENDS,
    "device_args.vectorised_shuffle": ("exact", "fast"),
}
"""The values each text key accepts: the one list the checks, the CLI's help and the strategy
registry (:func:`fediot.engines.strategies.strategy_for`, which builds every optimiser named
here; tested) all use."""


MAX_DEVICES: Final[int] = len(DEVICES) * MAX_VIRTUAL_DEVICES_PER_DEVICE
"""Most devices a run can have (every catalogue device cut into the most virtual devices)."""

INT_RANGES: Final[dict[str, tuple[int, int]]] = {
    "common_args.random_seed": (0, MAX_SEED),
    "data_args.testbed_seed": (0, MAX_SEED),
    "data_args.attack_cap": (0, MAX_ROWS),
    "data_args.virtual_devices_per_device": (1, MAX_VIRTUAL_DEVICES_PER_DEVICE),
    "train_args.client_num_in_total": (1, MAX_DEVICES),
    "train_args.client_num_per_round": (1, MAX_DEVICES),
    "train_args.client_num_min_replies": (1, MAX_DEVICES),
    "train_args.comm_round": (1, MAX_ROUNDS),
    "train_args.stale_after_missed_rounds": (0, MAX_ROUNDS),
    "train_args.epochs": (1, MAX_EPOCHS),
    "train_args.batch_size": (1, MAX_BATCH_SIZE),
    "train_args.lr_step_rounds": (1, MAX_ROUNDS),
    "train_args.krum_malicious": (-1, MAX_DEVICES),
    "train_args.krum_selected": (0, MAX_DEVICES),
    "validation_args.frequency_of_the_test": (0, MAX_ROUNDS),
    "validation_args.early_stopping_patience": (0, MAX_ROUNDS),
    "detection_args.window": (0, MAX_WINDOW),
    "detection_args.max_window": (1, MAX_WINDOW),
    "device_args.worker_num": (1, MAX_DEVICES),
    "device_args.min_rows_for_statistics": (1, MAX_ROWS),
    "device_args.vectorised_chunk_devices": (0, MAX_DEVICES),
    "device_args.vectorised_threads": (0, 64),
    "comm_args.secagg_quantization_range": (2, 1 << 40),
    "comm_args.secagg_reconstruction_threshold": (0, MAX_DEVICES),
}
"""Inclusive range of every integer key (cross-key limits, such as ``client_num_per_round ≤
client_num_in_total``, are checked after these)."""

FLOAT_RANGES: Final[dict[str, tuple[str, float, float, str]]] = {
    "data_args.testbed_scale": ("(", 0.0, MAX_TESTBED_SCALE, "]"),
    "data_args.warmup_min_history": ("[", 0.0, 1e6, "]"),
    "data_args.warmup_settle_seconds": ("[", 0.0, MAX_SECONDS, "]"),
    "train_args.learning_rate": ("(", 0.0, 100.0, "]"),
    "train_args.weight_decay": ("[", 0.0, 100.0, "]"),
    "train_args.lr_min_factor": ("(", 0.0, 1.0, "]"),
    "train_args.lr_step_gamma": ("(", 0.0, 1.0, "]"),
    "train_args.proximal_mu": ("[", 0.0, 1e6, "]"),
    "train_args.server_learning_rate": ("(", 0.0, 100.0, "]"),
    "train_args.server_beta_1": ("(", 0.0, 1.0, "]"),
    "train_args.server_beta_2": ("(", 0.0, 1.0, "]"),
    "train_args.server_tau": ("(", 0.0, 1e3, "]"),
    "train_args.trimmed_beta": ("[", 0.0, 0.5, ")"),
    "train_args.max_update_norm_ratio": ("[", 0.0, 1e6, "]"),
    "validation_args.early_stopping_min_delta": ("[", 0.0, 1.0, ")"),
    "detection_args.threshold_k": ("[", 0.0, 1e6, "]"),
    "detection_args.threshold_quantile": ("(", 0.0, 1.0, "]"),
    "comm_args.secagg_clipping_range": ("(", 0.0, 1e6, "]"),
    **PRIVACY_FLOAT_RANGES,
}
"""Range of every float key as interval notation: ``("(", 0.0, 1.0, "]")`` is 0 < x ≤ 1.
Floats are always finite (``.nan`` and ``.inf`` are refused by type)."""

class _BoundedRepr(reprlib.Repr):
    """reprlib's bounded repr, also for integers past ``repr``'s 4,300 digits (which raise)."""

    def repr_int(self, x: int, level: int) -> str:
        if x.bit_length() > 14_000:  # about 4,200 digits, below the limit of 4,300
            sign = "-" if x < 0 else ""
            return f"{sign}<an integer of about {int(x.bit_length() * math.log10(2)):,} digits>"
        return super().repr_int(x, level)


_shown = _BoundedRepr()
_shown.maxstring = _shown.maxother = 60
_shown.maxlevel = 2
# Values are echoed in errors through this bounded repr: a value's full repr can be huge (a
# 4,000-digit integer, a long nested list) and is never what the reader needs.


def _key_name(key: Any) -> str:
    """A key as written in errors: itself if short printable text, else its bounded repr (so
    that a key holding a line break or a terminal escape cannot split or garble the line)."""
    if isinstance(key, str) and key.isprintable() and len(key) <= 60:
        return key
    return _shown.repr(key)


def _yaml_number_hint(value: str) -> str:
    """A hint when a string looks like a number YAML 1.1 reads as text (``1e9``)."""
    try:
        float(value)
    except ValueError:
        return ""
    return " (YAML reads a number without a dot, such as 1e9, as text: write 1.0e+9)"


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """``value`` as the annotated type, or a ConfigError naming ``where``."""
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer beyond float64 (> 1.8e308)
                number = math.inf
            if not math.isfinite(number):
                raise ConfigError(f"{where}: must be a finite number, got {_shown.repr(value)}")
            return number
    elif annotation is str:
        if isinstance(value, str):
            if "\x00" in value:  # no key has a use for it, and paths with one crash open()
                raise ConfigError(f"{where}: contains a NUL character")
            return value
    elif typing.get_origin(annotation) is tuple:
        items = typing.get_args(annotation)
        if isinstance(value, list | tuple) and len(value) == len(items):
            return tuple(_coerce(v, t, f"{where}[{i}]")
                         for i, (v, t) in enumerate(zip(value, items, strict=True)))
        raise ConfigError(f"{where}: expected a list of {len(items)} numbers, "
                          f"got {_shown.repr(value)}")
    else:  # pragma: no cover - only the types above are used
        raise TypeError(f"unsupported annotation {annotation!r}")
    name = getattr(annotation, "__name__", str(annotation))
    hint = _yaml_number_hint(value) if isinstance(value, str) and name != "str" else ""
    raise ConfigError(f"{where}: expected {name}, got {type(value).__name__} "
                      f"{_shown.repr(value)}{hint}")


def known_keys() -> list[str]:
    """Every ``section.key`` a configuration may hold (those it ignores included)."""
    keys = [f"{section}.{f.name}" for section, section_type in _section_types().items()
            for f in fields(section_type)]
    return keys + list(IGNORED_KEYS)


def closest_keys(key: str, limit: int = 3) -> str:
    """`` (did you mean …?)`` naming the known keys closest to the misspelt ``key``, or ``""``:
    close names in the same section first, else close names in any section.

    Parameters
    ----------
    key
        The unknown ``section.key`` (or a bare section name) as written.
    limit
        Most suggestions shown. Default 3.
    """
    if len(key) > 100:  # difflib is quadratic in the length; no key is that long
        return ""
    if "." not in key:
        close = difflib.get_close_matches(key, list(_section_types()), n=limit)
    else:
        section, _, name = key.partition(".")
        known = known_keys()
        same = [k.partition(".")[2] for k in known if k.partition(".")[0] == section]
        close = [f"{section}.{n}" for n in difflib.get_close_matches(name, same, n=limit)]
        if not close:  # a key under the wrong section, or a misspelt section
            by_name = {k.partition(".")[2]: k for k in reversed(known)}
            close = [by_name[n] for n in difflib.get_close_matches(name, list(by_name),
                                                                 n=limit, cutoff=0.8)]
    return f" (did you mean {' or '.join(close)}?)" if close else ""


def _section_types() -> dict[str, type[Any]]:
    hints = typing.get_type_hints(Config)
    return {f.name: hints[f.name] for f in fields(Config)}


def parse_config(raw: Any, source: str = "config") -> Config:
    """Check and convert a nested dict (as read from YAML) into a :class:`Config`."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(raw).__name__}")
    sections = _section_types()
    built: dict[str, Any] = {}
    for section_name, values in raw.items():
        if section_name != "environment_args" and section_name not in sections:
            hint = closest_keys(section_name) if isinstance(section_name, str) else ""
            raise ConfigError(f"{source}: unknown section {_shown.repr(section_name)}{hint}; "
                              f"expected one of {sorted(sections)}")
        if values is None:
            values = {}
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: {section_name} must be a mapping of keys, got "
                              f"{type(values).__name__} {_shown.repr(values)}")
        if section_name == "environment_args":
            for key in values:
                if f"environment_args.{key}" not in IGNORED_KEYS:
                    dotted = f"environment_args.{_key_name(key)}"
                    raise ConfigError(f"{source}: unknown key {dotted}{closest_keys(dotted)}")
            continue
        section_type = sections[section_name]
        hints = typing.get_type_hints(section_type)
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            if key not in hints:
                dotted = f"{section_name}.{_key_name(key)}"
                if dotted in IGNORED_KEYS:
                    if dotted == "tracking_args.enable_wandb" and value:
                        raise ConfigError(f"{source}: {dotted}: hosted tracking is not supported")
                    continue
                raise ConfigError(f"{source}: unknown key {dotted}{closest_keys(dotted)}")
            kwargs[key] = _coerce(value, hints[key], f"{source}: {section_name}.{key}")
        built[section_name] = section_type(**kwargs)
    config = Config(**built)
    _check(config, source)
    return config


def parse_config_text(text: str | bytes, source: str) -> Config:
    """A configuration from YAML text that came from outside (a file's contents, a run config
    sent over the network), read with :func:`~fediot.core.safe_yaml.load_yaml`."""
    try:
        raw = load_yaml(text, source)
    except UnsafeInputError as error:
        raise ConfigError(str(error)) from None
    return parse_config(raw, source=source)


def _interval(low_bracket: str, low: float, high: float, high_bracket: str) -> str:
    return f"{low_bracket}{low:g}, {high:g}{high_bracket}"


def _in_interval(value: float, low_bracket: str, low: float, high: float,
                 high_bracket: str) -> bool:
    above = value > low if low_bracket == "(" else value >= low
    below = value < high if high_bracket == ")" else value <= high
    return above and below


def run_name_problem(name: str) -> str | None:
    """Why ``name`` cannot be a run folder's name (``None`` if it can; empty means a time
    stamp). A run name must be one safe path component: never a way out of the runs folder."""
    if not name:
        return None
    if len(name) > MAX_RUN_NAME_LENGTH:
        return f"at most {MAX_RUN_NAME_LENGTH} characters, got {len(name)}"
    if "/" in name or "\\" in name:
        return f"must be one folder name, without '/' or '\\\\': {_shown.repr(name)}"
    if any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name):
        return f"must not contain control characters: {_shown.repr(name)}"
    if name.startswith((".", "-")):  # '.', '..', hidden folders, names read as options
        return f"must not start with '.' or '-': {_shown.repr(name)}"
    return None


LINEAR_STRATEGIES: Final[tuple[str, ...]] = ("FedAvg", "FedProx", "FedAdam")
"""The aggregations that need only the weighted sum of the updates (secure aggregation)."""

KRUM_STRATEGIES: Final[tuple[str, ...]] = ("Krum", "MultiKrum", "Bulyan")
"""The aggregations that assume f malicious devices (``train_args.krum_malicious``)."""


def tolerated_malicious(strategy: str, devices: int) -> int:
    """The most malicious devices ``strategy`` (Krum, MultiKrum: ⌊(n − 3)/2⌋; Bulyan:
    ⌊(n − 3)/4⌋) tolerates among ``devices`` updates; 0 below 3 devices."""
    times = 4 if strategy == "Bulyan" else 2
    return max((devices - 3) // times, 0)


def assumed_malicious(strategy: str, krum_malicious: int, devices: int) -> int:
    """The f that ``strategy`` assumes among ``devices`` updates: ``krum_malicious``, or with
    -1 (the default) :func:`tolerated_malicious`."""
    return tolerated_malicious(strategy, devices) if krum_malicious < 0 else krum_malicious


def _check(config: Config, source: str) -> None:
    """Cross-key checks: choices, ranges, and impossible combinations."""
    def fail(key: str, message: str) -> ConfigError:
        return ConfigError(f"{source}: {key}: {message}")

    flat = {f"{s}.{k}": v for s, d in config.to_dict().items() for k, v in d.items()}
    for key, choices in CHOICES.items():
        if flat[key] not in choices:
            raise fail(key, f"must be one of {list(choices)}, got {_shown.repr(flat[key])}")
    for key, (low, high) in INT_RANGES.items():
        if not low <= flat[key] <= high:
            raise fail(key, f"must be an integer in {low:,}…{high:,}, "
                            f"got {_shown.repr(flat[key])}")
    for key, bounds in FLOAT_RANGES.items():
        value = flat[key]
        if not math.isfinite(value) or not _in_interval(value, *bounds):
            raise fail(key, f"must be a finite number in {_interval(*bounds)}, got {value}")
    t, d, dv = config.train_args, config.data_args, config.device_args
    if (any(not (math.isfinite(f) and f > 0) for f in d.split)
            or abs(sum(d.split) - 1) > 1e-6):
        raise fail("data_args.split", f"three positive fractions summing to 1, got {d.split}")
    available = len(DEVICES) * d.virtual_devices_per_device
    if t.client_num_in_total > available:
        raise fail("train_args.client_num_in_total",
                   f"{t.client_num_in_total} > {available} devices available "
                   f"({len(DEVICES)} × virtual_devices_per_device "
                   f"{d.virtual_devices_per_device})")
    if not 0 < t.client_num_min_replies <= t.client_num_per_round:
        raise fail("train_args.client_num_min_replies",
                   f"must be in 1…client_num_per_round ({t.client_num_per_round}), "
                   f"got {t.client_num_min_replies}")
    if t.client_num_per_round > t.client_num_in_total:
        raise fail("train_args.client_num_per_round",
                   f"{t.client_num_per_round} > client_num_in_total {t.client_num_in_total}")
    if t.federated_optimizer in KRUM_STRATEGIES:
        # Krum scores each update by its n − f − 2 nearest others and is proven robust only
        # for n ≥ 2f + 3 (Blanchard et al. 2017), Bulyan for n ≥ 4f + 3 (El Mhamdi et al.
        # 2018); below that they silently are not
        name, n = t.federated_optimizer, t.client_num_per_round
        times = 4 if name == "Bulyan" else 2
        if n < 3:
            raise fail("train_args.client_num_per_round",
                       f"{name} needs at least 3 devices per round ({times} × krum_malicious "
                       f"+ 3), got {n}")
        f = assumed_malicious(name, t.krum_malicious, n)
        if n < times * f + 3:
            raise fail("train_args.krum_malicious",
                       f"{name} needs client_num_per_round ≥ {times} × krum_malicious + 3; "
                       f"{n} devices per round tolerate at most {(n - 3) // times}, "
                       f"got {f}")
        if name != "Bulyan" and t.krum_selected > n - f:
            raise fail("train_args.krum_selected",
                       f"{name} can average at most client_num_per_round − krum_malicious = "
                       f"{n - f} updates, got {t.krum_selected}")
    if dv.worker_num > t.client_num_in_total:
        raise fail("device_args.worker_num",
                   f"{dv.worker_num} workers > client_num_in_total {t.client_num_in_total}")
    if config.comm_args.backend == "vectorised" and dv.backend == "numpy":
        raise fail("device_args.backend",
                   "numpy cannot run under comm_args.backend: vectorised, which trains every "
                   "device's model stacked with torch (use auto or torch)")
    if d.dataset == "N-BaIoT" and not d.data_cache_dir:
        raise fail("data_args.data_cache_dir", "required for dataset N-BaIoT (the data's folder)")
    problem = run_name_problem(config.tracking_args.run_name)
    if problem:
        raise fail("tracking_args.run_name", problem)
    _check_tracking(config.tracking_args, fail)
    _check_privacy(config.privacy_args, fail)
    _check_secure_aggregation(config, fail)


def _check_secure_aggregation(config: Config,
                              fail: Callable[[str, str], ConfigError]) -> None:
    c, t = config.comm_args, config.train_args
    if not c.secure_aggregation:
        return
    if t.federated_optimizer not in LINEAR_STRATEGIES:
        raise fail("comm_args.secure_aggregation",
                   f"needs a linear aggregation ({', '.join(LINEAR_STRATEGIES)}): "
                   f"{t.federated_optimizer} must see every device's update")
    if t.robust_statistics in ("trimmed_mean", "median"):
        raise fail("train_args.robust_statistics",
                   f"{t.robust_statistics} cannot combine with comm_args.secure_aggregation: a "
                   f"robust combination needs each device's own statistics, secure "
                   f"aggregation shows the server only their sum (use off or auto)")
    if t.client_num_per_round < 2:
        raise fail("comm_args.secure_aggregation",
                   "needs at least 2 devices per round (train_args.client_num_per_round)")
    if c.secagg_reconstruction_threshold > t.client_num_per_round:
        raise fail("comm_args.secagg_reconstruction_threshold",
                   f"{c.secagg_reconstruction_threshold} > client_num_per_round "
                   f"{t.client_num_per_round}")
    if c.secagg_reconstruction_threshold == 1:
        raise fail("comm_args.secagg_reconstruction_threshold",
                   "1 lets the server rebuild every secret from one device: 0 or ≥ 2")


def _check_tracking(tracking: TrackingArgs,
                    fail: Callable[[str, str], ConfigError]) -> None:
    uri = tracking.mlflow_tracking_uri
    if uri != uri.strip():
        raise fail("tracking_args.mlflow_tracking_uri",
                   f"leading or trailing spaces in {_shown.repr(uri)}")
    scheme, sep, rest = uri.partition("://") if "://" in uri else uri.partition(":")
    if uri == "databricks":  # MLflow reads this bare word as the hosted service
        scheme, sep = uri, ":"
    # "C:/…" style drive letters and plain paths have no scheme
    if sep and len(scheme) > 1 and scheme.replace("-", "_").isidentifier():
        if scheme not in MLFLOW_URI_SCHEMES:
            raise fail("tracking_args.mlflow_tracking_uri",
                       f"scheme {scheme!r} not supported (tracking stays on your machines): "
                       f"use one of {list(MLFLOW_URI_SCHEMES)} or a folder path")
        if not rest.strip("/"):
            raise fail("tracking_args.mlflow_tracking_uri", f"{_shown.repr(uri)} names no store")
    if not tracking.mlflow_experiment.strip():
        raise fail("tracking_args.mlflow_experiment", "must not be empty")


def check_simulation(config: Config) -> None:
    """Refuse, for a run on this machine, a configuration meant for a real deployment (one
    error naming the key and the commands that run it)."""
    if config.common_args.training_type != "simulation":
        raise ConfigError(
            "common_args.training_type: 'cross_silo' runs on a real server and real devices: "
            "start `fediot server` (./run_server.sh) and one `fediot client` per device "
            "(./run_client.sh N); use 'simulation' to run on this machine")


def load_config(path: Path) -> Config:
    """Read and check a YAML configuration file (see :func:`~fediot.core.safe_yaml.load_yaml`
    for what the file itself must be)."""
    path = Path(path)
    if "\x00" in str(path):
        raise ConfigError(f"{str(path)!r}: a path cannot contain a NUL character")
    if not path.is_file():
        raise ConfigError(f"{path}: no such configuration file")
    try:
        text = read_text(path)
    except UnsafeInputError as error:
        raise ConfigError(str(error)) from None
    return parse_config_text(text, str(path))


def dump_config(config: Config) -> str:
    """The resolved configuration as YAML (what a run folder records)."""
    return yaml.safe_dump(config.to_dict(), sort_keys=False)


