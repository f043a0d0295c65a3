"""Warm-up hygiene: feature rows computed before a stream has history are not steady behaviour.

An AfterImage row summarises the recent past of the packet's streams. For the first packet of a
source (a new host, or a capture's first packet) there is no past: every weight is 1, every
variance 0, the means are the packet itself. Such a row has exactly the shape of a
spoofed-source flood's rows (Gafgyt TCP/UDP: a new random source per packet), so a model that
learns to reconstruct it learns to reconstruct the flood. Measured: trained long enough on real
benign rows that include the one cold-start row, a detector flags 2 % of real Gafgyt UDP rows;
without that row, 100 %.

:class:`WarmupRule` decides which rows are warm-up, the same way everywhere FedIoT fits
something on benign rows (device clients, the centralised and local baselines, the sklearn-style
estimator, N-BaIoT's protocol):

- **no history** (``min_history``): the packet's source has less than ``min_history`` packets of
  recent history: its ``MI_dir`` *and* ``H`` weights at the slowest decay (λ = 0.01, half-life
  100 s) are both below ``1 + min_history`` (the packet itself counts 1). Works on feature rows
  alone (N-BaIoT's CSV files carry no time stamps).
- **settling** (``settle_seconds``): where a packet stream's start is seen, which is the
  streaming detector's own extractor, rows within ``settle_seconds`` of its first packet are
  warm-up: every source is new to the extractor then, whatever its real history.

Only fitting drops warm-up rows. Test rows are never dropped, and the streaming detector scores
every packet; during its settling time it only holds back alerts (a flood is all no-history
rows, so dropping those when detecting would blind the detector to exactly that attack).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from fediot.core.catalog import FEATURE_NAMES, LAMBDA_LABELS, LAMBDAS
from fediot.core.errors import FediotError

SLOWEST_LABEL: Final[str] = LAMBDA_LABELS[int(np.argmin(LAMBDAS))]
"""The slowest decay's column label (``"0.01"``)."""
SOURCE_WEIGHT_COLUMNS: Final[tuple[int, int]] = (
    FEATURE_NAMES.index(f"MI_dir_L{SLOWEST_LABEL}_weight"),
    FEATURE_NAMES.index(f"H_L{SLOWEST_LABEL}_weight"),
)
"""Columns holding a source's decayed packet count at the slowest decay (MI_dir, H)."""
SLOWEST_HALF_LIFE: Final[float] = 1.0 / min(LAMBDAS)
"""Seconds for the slowest statistic to halve an old packet's weight (2^(−λ·t) = ½): 100 s."""

DEFAULT_MIN_HISTORY: Final[float] = 1.0
DEFAULT_SETTLE_SECONDS: Final[float] = SLOWEST_HALF_LIFE


class WarmupError(FediotError):
    """A warm-up rule parameter out of range."""


@dataclass(frozen=True)
class WarmupRule:
    """Which feature rows are warm-up (no history yet), not steady behaviour.

    Parameters
    ----------
    min_history
        A row is warm-up when its source's ``MI_dir`` and ``H`` weights at λ = 0.01 are both
        below ``1 + min_history``: the source had less than this many packets of decayed
        history before the row's packet. Default 1.0 (not even one earlier packet); 0 turns the
        rule off.
    settle_seconds
        Rows within this many seconds of the first packet a streaming extractor saw are
        warm-up (the streaming detector holds back their alerts). Default 100 s, the slowest
        statistic's half-life; 0 turns it off.
    """

    min_history: float = DEFAULT_MIN_HISTORY
    settle_seconds: float = DEFAULT_SETTLE_SECONDS

    def __post_init__(self) -> None:
        for name in ("min_history", "settle_seconds"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float | np.number)
                    or not math.isfinite(value) or value < 0):
                raise WarmupError(f"warm-up {name} must be a finite number ≥ 0; got {value!r}")
            object.__setattr__(self, name, float(value))

    @classmethod
    def off(cls) -> WarmupRule:
        """A rule that calls no row warm-up."""
        return cls(0.0, 0.0)

    def no_history(self, rows: npt.NDArray[np.floating]) -> npt.NDArray[np.bool_]:
        """Per row: True where its source had less than ``min_history`` packets of history."""
        x = np.asarray(rows)
        if x.ndim != 2 or x.shape[1] != len(FEATURE_NAMES):
            raise WarmupError(
                f"warm-up rule: expected rows × {len(FEATURE_NAMES)} features, got {x.shape}")
        if self.min_history == 0:
            return np.zeros(len(x), dtype=np.bool_)
        limit = 1.0 + self.min_history
        mi, h = SOURCE_WEIGHT_COLUMNS
        mask: npt.NDArray[np.bool_] = (x[:, mi] < limit) & (x[:, h] < limit)
        return mask

    def steady(self, rows: npt.NDArray[np.floating]) -> tuple[npt.NDArray[np.floating], int]:
        """``rows`` without the no-history rows (in order), and how many were dropped.

        Returns ``rows`` itself (no copy) when nothing is dropped.
        """
        mask = self.no_history(rows)
        dropped = int(mask.sum())
        if dropped == 0:
            return rows, 0
        return rows[~mask], dropped

    def settling(self, timestamps: npt.NDArray[np.float64], first: float) -> npt.NDArray[np.bool_]:
        """Per packet: True while the stream that started at ``first`` is still settling."""
        t = np.asarray(timestamps, dtype=np.float64)
        if self.settle_seconds == 0:
            return np.zeros(t.shape, dtype=np.bool_)
        return np.asarray(t - first < self.settle_seconds)
