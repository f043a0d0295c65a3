"""Server-side federated arithmetic: aggregation, server optimisers, learning-rate schedules,
client sampling. One small class per idea, in the manner of Flower's strategy modules.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from fediot.core.errors import FediotError
from fediot.core.federated.blockwise import weighted_sum
from fediot.core.federated.messages import FitReport, Weights


def weighted_average(reports: Sequence[FitReport]) -> Weights:
    """Average of the reports' weights, each weighted by its true number of training rows
    (in float64, a block of reports per layer at a time: :func:`weighted_sum`)."""
    if not reports:
        raise FediotError("cannot aggregate zero fit reports")
    total = sum(r.num_examples for r in reports)
    if total <= 0:
        raise FediotError("cannot aggregate: the reports hold no training rows")
    fractions = np.array([r.num_examples / total for r in reports], dtype=np.float64)
    return [layer.astype(np.float32)
            for layer in weighted_sum([r.weights for r in reports], fractions)]


@dataclass
class FedAvg:
    """Federated averaging (McMahan et al. 2017), weighted by each device's true sample count.

    The seed weighted by batch count, which over-weights small devices whose last batch is
    short; here a device with twice the rows counts twice.
    """

    name: str = "FedAvg"

    def client_proximal_mu(self) -> float:
        """FedProx's μ the devices should apply (0: none)."""
        return 0.0

    def aggregate(self, current: Weights, reports: Sequence[FitReport]) -> Weights:
        """The new global weights from this round's reports."""
        return weighted_average(reports)

    def state(self) -> dict[str, npt.NDArray[np.float64] | float]:
        """Server optimiser state to checkpoint (none for FedAvg)."""
        return {}

    def load_state(self, state: dict[str, npt.NDArray[np.float64] | float]) -> None:
        """Restore :meth:`state` (nothing for FedAvg)."""


@dataclass
class FedProx(FedAvg):
    """FedAvg whose devices add (μ/2)·‖w − w_global‖² to their loss (Li et al. 2020).

    Parameters
    ----------
    proximal_mu
        μ ≥ 0. Default 0.01.
    """

    name: str = "FedProx"
    proximal_mu: float = 0.01

    def client_proximal_mu(self) -> float:
        return self.proximal_mu


@dataclass
class FedAdam(FedAvg):
    """FedAvg with an Adam server optimiser on the averaged update (Reddi et al. 2021).

    Update per round t: Δ = avg − w; m = β₁m + (1−β₁)Δ; v = β₂v + (1−β₂)Δ²;
    w ← w + η·√(1−β₂ᵗ)/(1−β₁ᵗ) · m / (√v + τ).

    Parameters
    ----------
    server_learning_rate
        η. Default 0.01.
    beta_1, beta_2
        Moment decay rates. Defaults 0.9, 0.99.
    tau
        Adaptivity floor τ. Default 1e-3.
    """

    name: str = "FedAdam"
    server_learning_rate: float = 0.01
    beta_1: float = 0.9
    beta_2: float = 0.99
    tau: float = 1e-3
    _m: list[npt.NDArray[np.float64]] = field(default_factory=list, repr=False)
    _v: list[npt.NDArray[np.float64]] = field(default_factory=list, repr=False)
    _t: int = 0

    def aggregate(self, current: Weights, reports: Sequence[FitReport]) -> Weights:
        average = weighted_average(reports)
        delta = [a.astype(np.float64) - c.astype(np.float64)
                 for a, c in zip(average, current, strict=True)]
        if not self._m:
            self._m = [np.zeros_like(d) for d in delta]
            self._v = [np.zeros_like(d) for d in delta]
        self._t += 1
        step = (self.server_learning_rate * math.sqrt(1 - self.beta_2**self._t)
                / (1 - self.beta_1**self._t))
        out: Weights = []
        for i, d in enumerate(delta):
            self._m[i] = self.beta_1 * self._m[i] + (1 - self.beta_1) * d
            self._v[i] = self.beta_2 * self._v[i] + (1 - self.beta_2) * d * d
            new = current[i].astype(np.float64) + step * self._m[i] / (np.sqrt(self._v[i])
                                                                        + self.tau)
            out.append(new.astype(np.float32))
        return out

    def state(self) -> dict[str, npt.NDArray[np.float64] | float]:
        state: dict[str, npt.NDArray[np.float64] | float] = {"t": float(self._t)}
        for i, (m, v) in enumerate(zip(self._m, self._v, strict=True)):
            state[f"m{i}"] = m
            state[f"v{i}"] = v
        return state

    def load_state(self, state: dict[str, npt.NDArray[np.float64] | float]) -> None:
        self._t = int(np.asarray(state.get("t", 0.0)).item())
        n = sum(1 for k in state if k.startswith("m"))
        self._m = [np.asarray(state[f"m{i}"], dtype=np.float64) for i in range(n)]
        self._v = [np.asarray(state[f"v{i}"], dtype=np.float64) for i in range(n)]


def make_strategy(name: str, *, proximal_mu: float = 0.01, server_learning_rate: float = 0.01,
                  beta_1: float = 0.9, beta_2: float = 0.99, tau: float = 1e-3) -> FedAvg:
    """The strategy called ``name`` (``FedAvg``, ``FedProx`` or ``FedAdam``)."""
    if name == "FedAvg":
        return FedAvg()
    if name == "FedProx":
        return FedProx(proximal_mu=proximal_mu)
    if name == "FedAdam":
        return FedAdam(server_learning_rate=server_learning_rate, beta_1=beta_1,
                       beta_2=beta_2, tau=tau)
    raise FediotError(f"unknown federated_optimizer {name!r}; use FedAvg, FedProx or FedAdam")


@dataclass(frozen=True)
class LearningRateSchedule:
    """The client learning rate across rounds (the FedIoT paper promises one; its code had none).

    Parameters
    ----------
    initial
        Rate at round 1.
    kind
        ``constant``; ``cosine``: from ``initial`` down to ``initial × min_factor`` at the last
        round; ``step``: × ``gamma`` every ``step_rounds`` rounds.
    total_rounds
        Number of rounds (for ``cosine``).
    min_factor, gamma, step_rounds
        Defaults 0.1, 0.5, 5.
    """

    initial: float
    kind: str = "cosine"
    total_rounds: int = 1
    min_factor: float = 0.1
    gamma: float = 0.5
    step_rounds: int = 5

    def at(self, server_round: int) -> float:
        """Learning rate of 1-based ``server_round``."""
        if self.kind == "constant":
            return self.initial
        if self.kind == "step":
            return self.initial * self.gamma ** ((server_round - 1) // self.step_rounds)
        if self.kind == "cosine":
            if self.total_rounds <= 1:
                return self.initial
            progress = (server_round - 1) / (self.total_rounds - 1)
            low = self.initial * self.min_factor
            return low + 0.5 * (self.initial - low) * (1 + math.cos(math.pi * progress))
        raise FediotError(f"unknown lr_schedule {self.kind!r}; use constant, cosine or step")


def sample_clients(client_ids: Sequence[str], per_round: int, seed: int,
                   server_round: int) -> list[str]:
    """``per_round`` distinct devices for this round, seeded, in catalogue order.

    Any subset can come up (a device is a client, not a rank index), and the choice of a
    round does not depend on what earlier rounds drew, so resuming a run redraws the same.
    """
    if not 0 < per_round <= len(client_ids):
        raise FediotError(f"cannot sample {per_round} of {len(client_ids)} devices")
    if per_round == len(client_ids):
        return list(client_ids)
    rng = np.random.default_rng([seed, server_round])
    chosen = rng.choice(len(client_ids), size=per_round, replace=False)
    return [client_ids[i] for i in sorted(chosen.tolist())]
