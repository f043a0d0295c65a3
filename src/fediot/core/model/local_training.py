"""What the PyTorch and the NumPy training paths share: defaults, checked hyper-parameters,
DP-SGD settings, the epoch loop and its report. No torch here (a device may not have it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sized
from dataclasses import asdict, dataclass
from typing import Any, Final, Literal, TypeVar, cast

import numpy as np

from fediot.core.model.transform import ModelInputError

DEFAULT_BATCH_SIZE: Final[int] = 128
"""Our mini-batch size. On one core a step at 128 rows costs under twice a step at 10 rows
(per-operation overhead dominates), so 128 trains ~8× more rows per second than the seed's 10,
while an epoch still has about 70–1,400 Adam steps on the N-BaIoT devices (two thirds of
13k–175k benign rows for training). See ``bench/bench_train.py``."""

DEFAULT_SCORE_BATCH_SIZE: Final[int] = 2048
"""Rows per forward pass when scoring. Activations of ~1 MB stay in cache: on one core 1k–2k-row
chunks score ~1.3× faster than 65,536-row chunks (bench_train.py)."""

OptimizerName = Literal["adam", "sgd"]
OPTIMIZERS: Final[tuple[str, ...]] = ("adam", "sgd")

ADAM_BETAS: Final[tuple[float, float]] = (0.9, 0.999)
"""Adam's moment decays (PyTorch's defaults), used by both paths."""
ADAM_EPS: Final[float] = 1e-8
"""Adam's denominator floor (PyTorch's default), used by both paths."""


def positive_int(value: Any, name: str) -> int:
    """``value`` as an int ≥ 1, or a :class:`ModelInputError` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise ModelInputError(f"{name} must be a positive integer; got {value!r}")
    return int(value)


def non_negative(value: Any, name: str, *, strict: bool = False) -> float:
    """``value`` as a finite float ≥ 0 (> 0 when ``strict``), or a :class:`ModelInputError`."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.floating | np.integer):
        raise ModelInputError(f"{name} must be a number; got {value!r}")
    number = float(value)
    if not np.isfinite(number) or number < 0 or (strict and number == 0):
        kind = "positive" if strict else "non-negative"
        raise ModelInputError(f"{name} must be a finite {kind} number; got {value!r}")
    return number


@dataclass(frozen=True)
class TrainSettings:
    """Checked hyper-parameters of one local training call (see ``train_local``).

    Build it with :meth:`checked`, which raises one :class:`ModelInputError` naming the first
    bad argument.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    optimizer: OptimizerName
    weight_decay: float
    prox_mu: float
    seed: int
    shuffle: bool

    @classmethod
    def checked(cls, *, epochs: Any, batch_size: Any, learning_rate: Any, optimizer: Any,
                weight_decay: Any, prox_mu: Any, seed: Any, shuffle: Any) -> TrainSettings:
        """Validate every argument (types and ranges) and return the settings."""
        checked_epochs = positive_int(epochs, "epochs")
        checked_batch = positive_int(batch_size, "batch_size")
        rate = non_negative(learning_rate, "learning_rate", strict=True)
        decay = non_negative(weight_decay, "weight_decay")
        mu = non_negative(prox_mu, "prox_mu")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise ModelInputError(f"seed must be an integer; got {seed!r}")
        if optimizer not in OPTIMIZERS:
            raise ModelInputError(f"optimizer must be one of {OPTIMIZERS}; got {optimizer!r}")
        return cls(checked_epochs, checked_batch, rate, cast(OptimizerName, optimizer), decay,
                   mu, int(seed), bool(shuffle))


@dataclass(frozen=True)
class TrainReport:
    """What one call of ``train_local`` did.

    Parameters
    ----------
    num_examples
        Rows of ``X`` (the FedAvg weight of this client).
    epochs
        Passes over ``X``.
    steps
        Optimizer steps taken.
    mean_loss
        Row-weighted mean of the batch reconstruction losses (per-element MSE) over the last
        epoch; the FedProx term is not included.
    epoch_losses
        The same mean for every epoch, in order.
    seconds
        Wall time of the training loop (excluding input validation).
    samples_per_second
        ``num_examples · epochs / seconds``.
    """

    num_examples: int
    epochs: int
    steps: int
    mean_loss: float
    epoch_losses: tuple[float, ...]
    seconds: float
    samples_per_second: float

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types (``epoch_losses`` becomes a list)."""
        data = asdict(self)
        data["epoch_losses"] = list(self.epoch_losses)
        return data


@dataclass(frozen=True)
class PrivateTraining:
    """DP-SGD settings for ``train_local`` (record-level differential privacy; PyTorch path).

    Parameters
    ----------
    clip_norm
        C: every row's gradient is clipped to this L2 norm.
    noise_multiplier
        σ: each step adds N(0, σ²C²) to every coordinate of the summed clipped gradients.
    noise
        Draws the noise and the rows of each step; seed it from the operating system's
        entropy (``numpy.random.default_rng()``), never from a seed anyone else knows.
    """

    clip_norm: float
    noise_multiplier: float
    noise: np.random.Generator

    def __post_init__(self) -> None:
        non_negative(self.clip_norm, "clip_norm", strict=True)
        non_negative(self.noise_multiplier, "noise_multiplier")


def private_steps_per_epoch(n_rows: int, batch_size: int) -> int:
    """Steps DP-SGD takes per epoch: each samples every row with probability
    ``batch_size / n_rows``, so an epoch of ``n_rows / batch_size`` steps (at least one) sees
    each row once on average."""
    return max(1, round(n_rows / batch_size))


Batch = TypeVar("Batch", bound=Sized)


def run_epochs(n_rows: int, epochs: int, batches: Callable[[], Iterable[Batch]],
               step: Callable[[Batch], float],
               epoch_end: Callable[[int], bool] | None = None) -> TrainReport:
    """The training loop both paths run.

    Parameters
    ----------
    n_rows
        Rows of the training data (``num_examples``).
    epochs
        Passes at most.
    batches
        Called once per epoch: that epoch's batches, in order.
    step
        One optimizer step on a batch; returns the batch's MSE (without the FedProx term).
    epoch_end
        Called after each epoch with its 1-based number; True stops training (default None).
    """
    epoch_losses: list[float] = []
    steps = 0
    start = time.perf_counter()
    for epoch in range(1, epochs + 1):
        weighted_loss = 0.0
        seen = 0
        for batch in batches():
            loss = step(batch)
            weighted_loss += loss * len(batch)
            seen += len(batch)
            steps += 1
        epoch_losses.append(weighted_loss / max(seen, 1))
        if epoch_end is not None and epoch_end(epoch):
            break
    seconds = time.perf_counter() - start
    return TrainReport(
        num_examples=n_rows,
        epochs=len(epoch_losses),
        steps=steps,
        mean_loss=epoch_losses[-1],
        epoch_losses=tuple(epoch_losses),
        seconds=seconds,
        samples_per_second=(n_rows * len(epoch_losses) / seconds if seconds > 0
                            else float("inf")),
    )
