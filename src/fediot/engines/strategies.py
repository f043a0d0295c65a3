"""The aggregation step for every engine: FedDetect's own strategies (FedAvg, FedProx,
FedAdam, in the pure core) or one of Flower's (FedTrimmedAvg, FedMedian, Krum) behind the same
interface, so any engine can use any of them and all engines agree.

Krum, MultiKrum and Bulyan assume f malicious devices (``train_args.krum_malicious``, by
default the most the round's replies tolerate); a round with fewer replies than configured
assumes no more than its replies tolerate. Krum and MultiKrum average the ``krum_selected``
best-scored updates (default n − f): the classical Krum's single pick follows one honest
device when the devices differ (pooled F1 31 % on N-BaIoT with f = 3 and no attacker).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from fediot.core.config import KRUM_STRATEGIES, Config, assumed_malicious, tolerated_malicious
from fediot.core.federated.messages import FitReport, Weights
from fediot.core.federated.strategies import FedAvg, make_strategy

FLOWER_STRATEGIES = ("FedTrimmedAvg", "FedMedian", "Krum", "MultiKrum", "Bulyan")


@dataclass
class FlowerAggregation(FedAvg):
    """Aggregation by one of Flower's own strategies (``aggregate_train``).

    Parameters
    ----------
    name
        ``FedTrimmedAvg``, ``FedMedian``, ``Krum``, ``MultiKrum`` or ``Bulyan``.
    trimmed_beta
        FedTrimmedAvg's fraction cut at each end. Default 0.2.
    krum_malicious
        The number f of malicious devices Krum, MultiKrum and Bulyan assume; -1 (default) the
        most each round's replies tolerate (:func:`tolerated_malicious`). Never more than
        that in any round.
    krum_selected
        Updates Krum and MultiKrum average; 0 (default) n − f of the round's n replies.
    """

    name: str = "FedMedian"
    trimmed_beta: float = 0.2
    krum_malicious: int = -1
    krum_selected: int = 0
    _strategy: Any = field(default=None, repr=False)
    _round: int = 0

    def __post_init__(self) -> None:
        from flwr.serverapp import strategy as flwr_strategy

        from fediot.engines import flower  # noqa: F401  (Flower's environment first)

        if self.name == "FedTrimmedAvg":
            self._strategy = flwr_strategy.FedTrimmedAvg(beta=self.trimmed_beta)
        elif self.name == "FedMedian":
            self._strategy = flwr_strategy.FedMedian()
        elif self.name in ("Krum", "MultiKrum"):
            # Flower's Krum is MultiKrum with one update kept; the count is set every round
            self._strategy = flwr_strategy.MultiKrum()
        elif self.name == "Bulyan":
            self._strategy = flwr_strategy.Bulyan()
        else:
            raise ValueError(f"not one of Flower's strategies here: {self.name!r}")

    def aggregate(self, current: Weights, reports: Sequence[FitReport]) -> Weights:
        self._round += 1
        replies = [train_reply(r.weights, r.num_examples, i + 1)
                   for i, r in enumerate(reports)]
        if self.name in KRUM_STRATEGIES:
            f = self.malicious(len(replies))
            self._strategy.num_malicious_nodes = f
            if self.name != "Bulyan":
                keep = self.krum_selected or len(replies) - f
                self._strategy.num_nodes_to_select = max(min(keep, len(replies) - f), 1)
            elif len(replies) < 3:  # Bulyan needs 4f + 3 replies even with f = 0
                return _median(replies, self._round)
        arrays, _ = self._strategy.aggregate_train(self._round, replies)
        return [np.asarray(a, dtype=np.float32) for a in arrays.to_numpy_ndarrays()]

    def malicious(self, replies: int) -> int:
        """The f assumed among ``replies`` updates: ``krum_malicious`` (or with -1 the most
        they tolerate), capped at what they tolerate."""
        return min(assumed_malicious(self.name, self.krum_malicious, replies),
                   tolerated_malicious(self.name, replies))

    def state(self) -> dict[str, npt.NDArray[np.float64] | float]:
        return {"round": float(self._round)}

    def load_state(self, state: dict[str, npt.NDArray[np.float64] | float]) -> None:
        self._round = int(np.asarray(state.get("round", 0.0)).item())


def _median(replies: list[Any], server_round: int) -> Weights:
    """Flower's FedMedian of ``replies`` (Bulyan's stand-in below 3 replies)."""
    from flwr.serverapp import strategy as flwr_strategy

    arrays, _ = flwr_strategy.FedMedian().aggregate_train(server_round, replies)
    if arrays is None:
        raise ValueError("no update to aggregate")
    return [np.asarray(a, dtype=np.float32) for a in arrays.to_numpy_ndarrays()]


def train_reply(weights: Weights, num_examples: int, node: int) -> Any:
    """A train reply as Flower's strategies read it (one ArrayRecord, one MetricRecord)."""
    from flwr.app import ArrayRecord, Message, Metadata, MetricRecord, RecordDict

    content = RecordDict({"arrays": ArrayRecord(numpy_ndarrays=list(weights)),
                          "metrics": MetricRecord({"num-examples": num_examples})})
    metadata = Metadata(run_id=0, message_id=f"fediot-{node}", src_node_id=node, dst_node_id=0,
                        reply_to_message_id="", group_id="", created_at=0.0, ttl=3600.0,
                        message_type="train")
    return Message(content, metadata=metadata)  # type: ignore[call-overload]  # untyped form


def strategy_for(config: Config) -> FedAvg:
    """The aggregation ``train_args.federated_optimizer`` names."""
    t = config.train_args
    if t.federated_optimizer in FLOWER_STRATEGIES:
        return FlowerAggregation(name=t.federated_optimizer, trimmed_beta=t.trimmed_beta,
                                 krum_malicious=t.krum_malicious,
                                 krum_selected=t.krum_selected)
    return make_strategy(t.federated_optimizer, proximal_mu=t.proximal_mu,
                         server_learning_rate=t.server_learning_rate, beta_1=t.server_beta_1,
                         beta_2=t.server_beta_2, tau=t.server_tau)
