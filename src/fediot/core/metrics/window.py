"""N-BaIoT's window vote: a row is an alert when most of the recent rows were flagged.

Meidan et al. (2018) smooth per-row anomaly flags over a window of consecutive instances of one
device's traffic; :func:`window_vote` implements it with a cumulative sum, O(n). They choose each
device's window ws* on its benign optimisation rows: the smallest window that raises no alarm
there (:func:`smallest_quiet_window`).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from fediot.core.metrics.errors import MetricsInputError


def window_vote(flags: npt.ArrayLike, window: int) -> npt.NDArray[np.bool_]:
    """Majority vote over the trailing ``window`` rows (the row itself and the ``window − 1``
    before it).

    Row ``i`` is flagged when more than half of the rows it votes over are flagged (a tie, only
    possible for an even window, is not an alert). The first ``window − 1`` rows vote over the
    rows seen so far (``i + 1`` rows), so the output has the input's length and ``window = 1`` is
    the identity. Rows must be consecutive rows of one stream (one device's capture, in time
    order): apply the vote per device, not across concatenated files.

    Parameters
    ----------
    flags
        1-D booleans (or 0/1 integers), ``True`` = anomalous.
    window
        Rows per vote, ≥ 1.
    """
    if isinstance(window, bool) or not isinstance(window, int | np.integer) or window < 1:
        raise MetricsInputError(f"window must be a positive integer; got {window!r}")
    array = np.asarray(flags)
    if array.ndim != 1:
        raise MetricsInputError(f"flags must be 1-D; got shape {array.shape}")
    if array.dtype != np.bool_:
        if array.size and not np.isin(array, (0, 1)).all():
            raise MetricsInputError("flags must be booleans or 0/1 values")
        array = array.astype(np.bool_)
    window = int(window)
    if window == 1:
        return array.copy()
    cumulative = np.cumsum(array, dtype=np.int64)
    counts = cumulative.copy()
    counts[window:] -= cumulative[:-window]
    voters = np.minimum(np.arange(1, len(array) + 1), window)
    return np.asarray(2 * counts > voters, dtype=np.bool_)


def smallest_quiet_window(flags: npt.ArrayLike, max_window: int) -> int:
    """The smallest window whose majority vote raises no alert on ``flags`` (benign rows in
    time order), or ``max_window`` when none up to it is quiet (nor longer than ``flags``).

    Only full windows are judged, as in N-BaIoT (a verdict over ``ws`` consecutive rows): the
    first ``ws − 1`` rows vote over fewer rows, so one flagged first row would otherwise rule
    out every window.
    """
    array = np.asarray(flags, dtype=np.bool_)
    if isinstance(max_window, bool) or not isinstance(max_window, int | np.integer) \
            or max_window < 1:
        raise MetricsInputError(f"max_window must be a positive integer; got {max_window!r}")
    largest = min(max_window, len(array))
    running = np.concatenate([[0], np.cumsum(array, dtype=np.int64)])
    for window in range(1, largest + 1):
        # flagged rows in each full window (the vote of its last row, as window_vote counts)
        if not (2 * (running[window:] - running[:-window]) > window).any():
            return window
    return max(largest, 1)
