"""Model selection without test data: keep the step with the lowest validation loss, stop on a
plateau.

The validation loss is the mean reconstruction error of benign *threshold-split* rows (never test
rows). The same rule serves the estimator (one step = one epoch) and the federated server (one
step = one round, the loss pooled from every device's threshold rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Final

from fediot.core.model.transform import ModelInputError

DEFAULT_PATIENCE: Final[int] = 5
DEFAULT_MIN_DELTA: Final[float] = 0.01


@dataclass
class PlateauStop:
    """Tracks a validation loss; says which step was best and when to stop.

    A step *improves* when its loss is below ``best · (1 − min_delta)``; after ``patience``
    steps in a row that do not improve, :attr:`should_stop` turns true.

    Parameters
    ----------
    patience
        Non-improving steps tolerated (≥ 1), or 0 to never stop early (the best step is still
        tracked). Default 5.
    min_delta
        Relative improvement a step must bring to count (≥ 0). Default 0.01 (1 %).

    Attributes
    ----------
    best_step_, best_loss_
        The best step so far and its loss (``None``/``inf`` before any step).
    history_
        ``(step, loss)`` of every step seen, in order.
    """

    patience: int = DEFAULT_PATIENCE
    min_delta: float = DEFAULT_MIN_DELTA
    best_step_: int | None = field(default=None, init=False)
    best_loss_: float = field(default=math.inf, init=False)
    history_: list[tuple[int, float]] = field(default_factory=list, init=False)
    _stale: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.patience, bool) or not isinstance(self.patience, int) \
                or self.patience < 0:
            raise ModelInputError(f"patience must be an integer ≥ 0; got {self.patience!r}")
        if (isinstance(self.min_delta, bool) or not isinstance(self.min_delta, int | float)
                or not math.isfinite(self.min_delta) or not 0 <= self.min_delta < 1):
            raise ModelInputError(f"min_delta must be in [0, 1); got {self.min_delta!r}")

    def update(self, step: int, loss: float) -> bool:
        """Record ``loss`` of ``step``; True if it is the new best."""
        if not math.isfinite(loss):
            raise ModelInputError(f"validation loss of step {step} is {loss}")
        self.history_.append((step, float(loss)))
        first = self.best_step_ is None
        improved = first or loss < self.best_loss_ * (1.0 - self.min_delta)
        # a step a little better than the best is kept, but does not reset the patience
        is_best = first or loss < self.best_loss_
        if is_best:
            self.best_step_, self.best_loss_ = step, float(loss)
        self._stale = 0 if improved else self._stale + 1
        return is_best

    @property
    def should_stop(self) -> bool:
        """True once ``patience`` steps in a row brought no real improvement."""
        return self.patience > 0 and self._stale >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta,
                "best_step": self.best_step_, "best_loss": self.best_loss_,
                "history": [list(item) for item in self.history_]}

    @classmethod
    def replay(cls, patience: int, min_delta: float,
               history: list[tuple[int, float]]) -> PlateauStop:
        """The tracker after seeing ``history`` again (to resume a run)."""
        tracker = cls(patience, min_delta)
        for step, loss in history:
            tracker.update(step, loss)
        return tracker
